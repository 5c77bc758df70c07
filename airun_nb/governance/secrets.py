"""The ``secrets`` namespace of templates: ``{{ secrets.API_TOKEN }}``.

Only names the owner declares may be read (``secrets: [API_TOKEN]`` in the settings, or
``AIRUN_SECRETS``): any other name is refused, so a workflow cannot read an arbitrary
environment variable. A secret is looked up when a step renders, never when the workflow is
parsed: first in the process environment, then in a ``.env`` file (python-dotenv's format; ``AIRUN_DOTENV`` names
another file; the default is ``.env`` in the working directory). The workflow text holds only
the name. Every value looked up is registered with :func:`airun_nb.governance.audit.register_secret`,
so it is replaced by ``***`` wherever the runtime would write or show it: step rows, outputs,
attempts, events, audit rows, gate previews, error lines and the journal. A template that read
a secret renders to a string that is registered whole (:mod:`airun_nb.spec.templates`' taint),
so a transformed secret (``| reverse``, ``.encode().hex()``, a slice) is redacted too.
"""

from __future__ import annotations

import contextvars
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from airun_nb.errors import TemplateError
from airun_nb.governance import audit as auditlog
from airun_nb.settings import file as settings

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class SecretWarning(UserWarning):
    """A workflow holds a literal secret-looking value (use ``{{ secrets.NAME }}``)."""


def dotenv_path() -> Path:
    return settings.dotenv_path()


def _dotenv() -> dict[str, str]:
    path = dotenv_path()
    if not path.is_file():
        return {}
    try:
        from dotenv import dotenv_values
    except ImportError:  # pragma: no cover - python-dotenv is a dependency
        return {}
    return {k: v for k, v in dotenv_values(path).items() if v is not None}


class SecretNotDeclared(TemplateError):
    """A template asked for a secret the owner did not declare."""


def declared() -> list[str]:
    """The names the owner declared (the settings' ``secrets:`` and ``AIRUN_SECRETS``)."""
    return settings.declared_secrets()


def lookup(name: str) -> str | None:
    """The value of secret ``name``, registered for redaction; None when it is not set;
    :class:`SecretNotDeclared` when the owner did not declare it."""
    if not _NAME.match(name):
        return None
    if name not in declared():
        raise SecretNotDeclared(
            f"secret '{name}' is not declared: the owner lists the secrets workflows may read "
            f"in the settings (secrets: [{name}] in airun.yaml, or AIRUN_SECRETS)"
        )
    note_read()
    value = os.environ.get(name)
    if value is None:
        value = _dotenv().get(name)
    if value is not None:
        auditlog.register_secret(value)
    return value


class Secrets(Mapping[str, str]):
    """What ``secrets`` is in a template: a read-only mapping looked up on use."""

    def __getitem__(self, name: str) -> str:
        value = lookup(str(name))
        if value is None:
            raise KeyError(name)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(())  # names are not listed: a template asks for the one it needs

    def __len__(self) -> int:
        return 0

    def __repr__(self) -> str:
        return "secrets"


def register_declared() -> None:
    """Register the value of every declared secret that is set, so that a step which echoes
    one without rendering it (an endpoint echoing a header, a program printing its
    environment) has it redacted too."""
    names = declared()
    if not names:
        return
    file_values = _dotenv()
    for name in names:
        value = os.environ.get(name)
        if value is None:
            value = file_values.get(name)
        if value is not None:
            auditlog.register_secret(value)


def namespace() -> dict[str, Any]:
    """The names the template context adds: ``{"secrets": Secrets()}``."""
    register_declared()
    return {"secrets": Secrets()}


def looks_secret(key: str, value: Any) -> bool:
    """Is ``value`` under ``key`` a literal credential (for the parse-time warning)?"""
    if not isinstance(value, str) or not value or "{{" in value:
        return False
    if auditlog.is_secret_key(key) and len(value) >= auditlog.MIN_SECRET_LENGTH:
        return True
    return auditlog.redact_text(value) != value


def literal_warnings(with_: Any, *, step: str, path: str = "with") -> list[str]:
    """One line per literal secret-looking value in a step's ``with:``."""
    out: list[str] = []
    if isinstance(with_, Mapping):
        for k, v in with_.items():
            where = f"{path}.{k}"
            if isinstance(v, (Mapping, list)):
                out += literal_warnings(v, step=step, path=where)
            elif looks_secret(str(k), v):
                out.append(
                    f"step '{step}', {where}: a literal secret in the workflow text; use "
                    f"{{{{ secrets.NAME }}}} (from the environment or .env) instead"
                )
    elif isinstance(with_, list):
        for i, v in enumerate(with_):
            out += literal_warnings(v, step=step, path=f"{path}[{i}]")
    return out


# How many secret values templates have read in this context: a render that read one is
# redacted whole (see airun_nb.spec.templates).
_READS: contextvars.ContextVar[int] = contextvars.ContextVar("secret_reads", default=0)


def note_read() -> None:
    _READS.set(_READS.get() + 1)


def reads() -> int:
    return _READS.get()
