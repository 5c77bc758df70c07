"""The capability registry: names, declared risks, the seed alias table and the policy's view.

A capability runs in three parts. ``prepare`` checks its arguments (paths must stay inside the
workspace) and captures what the undo will need (the previous content of a file, a snapshot of
the tables a SQL statement touches) *before* anything changes; the engine stores that undo
record durably with the step. ``apply`` does the action. ``undo`` reverses it from the stored
record, so a rollback after a restart does what it would have done before. A step that was in
flight when its process died reuses the undo record of its first attempt.

Risk levels: ``low`` read-only, ``medium`` reversible, ``high`` irreversible or external,
``critical``. Step kinds are capabilities too for the policy: ``call`` is ``python.call``,
``python`` is ``python.exec``, ``sql`` is ``sql.query``.

Adding a family of capabilities: write a module in this package that calls, at import time::

    register("family.verb", apply, risk="medium", prepare=prepare, undo=undo,
             description="...", plain=False)

where ``apply(args, ctx)`` and ``prepare(args, ctx)`` take the step's ``with:`` mapping and a
:class:`Context`, and ``undo(record, ctx)`` takes what ``prepare`` returned. Then import the
module from the package's ``__init__``. ``ALIASES`` maps other names (the seed dialect's ids) to
registered names; ``get`` and ``canonical`` resolve through it. With ``plain=True`` (the default,
for user functions) ``fn(**with)`` is called instead.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airun_nb.capabilities import confine
from airun_nb.capabilities.workspace import Workspace
from airun_nb.errors import AirunError
from airun_nb.store.redaction import redact_keys

RISKS = ("low", "medium", "high", "critical")


class CapabilityError(AirunError):
    """A capability was misused (unknown name, bad arguments, failed undo...)."""


class CapabilityRefused(CapabilityError):
    """A capability refused what it was asked to do (a program or name not allowed)."""

    exit_kind = "security"


@dataclass
class Context:
    """What a capability may use: the workspace, where to keep undo data, who runs it."""

    workspace: Workspace
    undo_dir: Path
    store: Any = None  # the Store, for snapshots kept as tables
    principal: str | None = None  # who runs the step
    hosts: list[str] | None = None  # where http.request may go (the policy's hosts:), or any

    def path(self, value: object, *, field: str = "path", capability: str = "") -> Path:
        """The real path of ``value`` inside the workspace, refused when it is protected (the
        store and its files, the workspace root: see :mod:`airun_nb.capabilities.confine`)."""
        real = self.workspace.path(value, field=field)
        return confine.check(
            real,
            value=value,
            field=field,
            capability=capability or "capability",
            store_path=self.store_path,
            workspace_root=self.workspace.root,
        )

    @property
    def store_path(self) -> Path | None:
        path = getattr(self.store, "path", None)
        return Path(path) if path is not None else None

    def undo_path(self, *parts: str) -> Path:
        p = self.undo_dir.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p


Prepare = Callable[[dict[str, Any], Context], dict[str, Any] | None]
Apply = Callable[[dict[str, Any], Context], Any]
Undo = Callable[[dict[str, Any], Context], None]


@dataclass
class Capability:
    name: str
    apply: Apply
    risk: str = "medium"
    prepare: Prepare | None = None
    undo: Undo | None = None
    description: str = ""
    acts_as: tuple[str, ...] = ()  # what it can do, as the policy sees it (python.exec...)

    @property
    def reversible(self) -> bool:
        return self.undo is not None


_REGISTRY: dict[str, Capability] = {}
# The seed dialect's capability names.
ALIASES = {
    "io.fs.write_file": "fs.write",
    "io.fs.read_file": "fs.read",
    "io.fs.copy": "fs.copy",
    "io.fs.copy_file": "fs.copy",
    "io.fs.move": "fs.move",
    "io.fs.move_file": "fs.move",
    "io.fs.delete": "fs.delete",
    "io.fs.delete_file": "fs.delete",
    "io.fs.mkdir": "fs.mkdir",
    "io.fs.make_dir": "fs.mkdir",
    "net.http.request": "http.request",
    "io.http.request": "http.request",
    "sys.shell.run": "shell.run",
    "io.shell.run": "shell.run",
    "data.sql.exec": "sql.exec",
}
# Step kinds as the policy sees them.
KIND_CAPABILITY = {"call": "python.call", "python": "python.exec", "sql": "sql.query"}
KIND_RISK = {"python.call": "medium", "python.exec": "high", "sql.query": "low"}


def register(
    name: str,
    fn: Apply | Callable[..., Any],
    *,
    risk: str = "medium",
    undo: Callable[..., Any] | None = None,
    prepare: Callable[..., Any] | None = None,
    description: str = "",
    plain: bool = True,
    acts_as: str | tuple[str, ...] = (),
) -> Capability:
    """Register a capability. With ``plain`` (the default) ``fn(**with)`` is called, ``undo``
    is called as ``undo(**with, result=...)`` with the step's arguments and result.

    ``acts_as`` names what it can do in the policy's terms: a capability that evaluates
    expressions or runs programs acts as ``python.exec`` or ``shell.run``, one that talks to
    the network as ``http.request``; every rule and check of those applies to it too."""
    if risk not in RISKS:
        raise CapabilityError(f"risk must be one of {', '.join(RISKS)}")
    if not re.match(r"^[A-Za-z_][\w.\-]*$", name):
        raise CapabilityError(f"bad capability name {name!r}")
    if plain:
        user_fn: Callable[..., Any] = fn
        user_undo, user_prepare = undo, prepare

        def apply_(args: dict[str, Any], ctx: Context) -> Any:
            return user_fn(**args)

        def prepare_(args: dict[str, Any], ctx: Context) -> dict[str, Any] | None:
            extra = user_prepare(**args) if user_prepare else None
            return {"args": args, "prepared": extra}

        def undo_(rec: dict[str, Any], ctx: Context) -> None:
            assert user_undo is not None
            kwargs = dict(rec.get("args") or {})
            if rec.get("prepared") is not None:
                kwargs["prepared"] = rec["prepared"]
            if "result" in rec:
                kwargs["result"] = rec["result"]
            user_undo(**kwargs)

        cap = Capability(name, apply_, risk, prepare_, undo_ if undo else None, description)
    else:
        cap = Capability(name, fn, risk, prepare, undo, description)
    cap.acts_as = (acts_as,) if isinstance(acts_as, str) else tuple(acts_as)
    _REGISTRY[name] = cap
    return cap


def get(name: str) -> Capability:
    real = ALIASES.get(name, name)
    cap = _REGISTRY.get(real)
    if cap is None:
        known = ", ".join(sorted(_REGISTRY))
        raise CapabilityError(f"unknown capability '{name}' (available: {known})")
    return cap


def canonical(name: str) -> str:
    return ALIASES.get(name, name)


def acts_as(name: str) -> tuple[str, ...]:
    """What a capability can do besides its own name, as the policy sees it (empty when it is
    not registered: the policy then sees its name at high risk)."""
    cap = _REGISTRY.get(canonical(name))
    if cap is None:
        return ()
    return tuple(c for c in cap.acts_as if c != cap.name)


def policy_name(kind: str, body: Any) -> str:
    """The capability name the policy sees for a step."""
    if kind == "capability":
        return canonical(str(body))
    return KIND_CAPABILITY.get(kind, kind)


def declared_risk(kind: str, body: Any) -> str:
    """The risk a capability (or step kind) declares for itself."""
    if kind == "capability":
        try:
            cap = get(str(body))
        except CapabilityError:
            return "high"
        levels = [
            cap.risk,
            *(
                declared_risk("capability", a) if a in _REGISTRY else KIND_RISK.get(a, "high")
                for a in acts_as(cap.name)
            ),
        ]
        return max(levels, key=RISKS.index)
    return KIND_RISK.get(policy_name(kind, body), "medium")


def risk_of(kind: str, body: Any, declared: str | None) -> str:
    """The risk the policy sees: a step's ``risk:`` may raise the declared risk, never lower it."""
    base = declared_risk(kind, body)
    if declared in RISKS and RISKS.index(declared) > RISKS.index(base):
        return declared
    return base


def summarize(value: Any, limit: int = 200) -> str:
    """A short, JSON-ish description of a result for the audit trail."""
    if isinstance(value, Mapping):
        value = redact_keys(value)
        short = {
            k: (v if not isinstance(v, str) or len(v) < 60 else v[:57] + "...")
            for k, v in value.items()
            if k not in ("headers",)
        }
        text = json.dumps(short, default=str)
    else:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
