"""Parts of workflow parsing: retry policies, the short path for plain steps, the spec hash.

Most steps of a big workflow are plain: an ``id``, one of ``call``, ``python``, ``sql`` or
``capability`` holding a string, and maybe ``needs``. :func:`plain_step` builds those without
the general checks (which find nothing to say about them) and writes their canonical JSON
directly; anything else returns None and takes the general path, which also words the errors.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from json.encoder import encode_basestring_ascii as _json_str
from typing import Any

from airun_nb.errors import SpecError
from airun_nb.settings import caps
from airun_nb.spec.digest import canonical, of_canonical
from airun_nb.spec.graph import suggest
from airun_nb.spec.model import RetryPolicy, StepSpec

ErrorAt = Callable[[str, list[Any]], SpecError]
Duration = Callable[[Any, list[Any]], float]

NO_RETRY = RetryPolicy()  # frozen: every step without retry: shares it
BACKOFFS = ("fixed", "exponential", "linear")
_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")
_PLAIN_KINDS = ("call", "python", "sql", "capability")
_PLAIN_KEYS = {frozenset(k) for kind in _PLAIN_KINDS for k in ((kind, "id"), (kind, "id", "needs"))}


def retry(value: Any, path: list[Any], error: ErrorAt, duration: Duration) -> RetryPolicy:
    """A step's ``retry:`` (a number of attempts or a mapping) as a policy."""
    if value is None:
        return NO_RETRY
    if isinstance(value, int) and not isinstance(value, bool):
        value = {"attempts": value}
    if not isinstance(value, dict):
        raise error("'retry' must be a number of attempts or a mapping", path)
    # YAML 1.1 reads a bare `on:` key as the boolean True.
    value = {("on" if k is True else k): v for k, v in value.items()}
    allowed = {"attempts", "backoff", "initial", "max", "on", "max_attempts", "delay"}
    for key in value:
        if key not in allowed:
            raise error(f"unknown key '{key}'{suggest(key, allowed)}", [*path, key])
    attempts = value.get("attempts", value.get("max_attempts", 1))
    if not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 1:
        raise error("'attempts' must be a positive integer", [*path, "attempts"])
    cap = caps.retry_max_attempts()
    if attempts > cap:
        raise error(
            f"'attempts' is {attempts}, more than the {cap} the settings allow "
            "(retry_max_attempts)",
            [*path, "attempts"],
        )
    backoff = value.get("backoff", "exponential")
    if backoff not in BACKOFFS:
        raise error(f"'backoff' must be one of {', '.join(BACKOFFS)}", [*path, "backoff"])
    on = value.get("on", [])
    if isinstance(on, str):
        on = [on]
    if not isinstance(on, list) or not all(isinstance(x, str) for x in on):
        raise error("'on' must be a list of exception type names", [*path, "on"])
    initial = value.get("initial", value.get("delay", 1.0))
    return RetryPolicy(
        attempts=attempts,
        backoff=backoff,
        initial=duration(initial, [*path, "initial"]),
        max=duration(value.get("max", 30.0), [*path, "max"]),
        on=tuple(on),
    )


def plain_step(raw: Any) -> tuple[StepSpec, str] | None:
    """A plain step and its definition's canonical JSON, or None for the general path."""
    if type(raw) is not dict or frozenset(raw) not in _PLAIN_KEYS:
        return None
    sid = raw["id"]
    if type(sid) is not str or not _ID.match(sid):
        return None
    needs = raw.get("needs")
    if needs is None:
        needs = []
    elif type(needs) is str:
        needs = [needs]
    elif type(needs) is not list:
        return None
    elif len(needs) == 1:  # the common case: one step needed
        if type(needs[0]) is not str:
            return None
        needs = [needs[0]]
    else:
        for n in needs:
            if type(n) is not str:
                return None
        needs = list(dict.fromkeys(needs))
    for kind in _PLAIN_KINDS:
        if kind in raw:
            break
    body = raw[kind]
    if type(body) is not str or not body.strip():
        return None
    definition = dict(raw)
    definition["kind"] = kind
    ordered = sorted(needs)
    definition["needs"] = ordered
    listed = ",".join(map(_json_str, ordered))
    if kind < "id":  # keys sorted: call/capability, id, kind, needs, python/sql
        text = (
            f'{{"{kind}":{_json_str(body)},"id":{_json_str(sid)},"kind":"{kind}",'
            f'"needs":[{listed}]}}'
        )
    else:
        text = (
            f'{{"id":{_json_str(sid)},"kind":"{kind}","needs":[{listed}],'
            f'"{kind}":{_json_str(body)}}}'
        )
    # StepSpec(id=..., kind=..., ...) without the dataclass __init__: the defaults are copied
    # from a built one, and the fields with a default factory get a fresh value each.
    step = _new_step(StepSpec)
    fields = step.__dict__
    fields.update(_DEFAULTS)
    for name, factory in _FACTORIES:
        fields[name] = factory()
    fields["id"] = sid
    fields["kind"] = kind
    fields["body"] = body
    fields["needs"] = needs
    fields["retry"] = NO_RETRY
    fields["definition"] = definition
    fields["def_hash"] = of_canonical(text)
    # a template's "{{" / "{%" can only come from a string in the JSON text
    fields["templated"] = "{{" in text or "{%" in text
    return step, text


_SET = {"id", "kind", "body", "needs", "retry", "definition", "def_hash", "templated"}
_DEFAULTS = vars(StepSpec(id="", kind="", body=None))  # every field, in order (_SET: set anew)
_FACTORIES = [
    (f.name, f.default_factory)
    for f in dataclasses.fields(StepSpec)
    if f.default_factory is not dataclasses.MISSING and f.name not in _SET
]
_new_step = object.__new__


def spec_hash(name: str, params: dict[str, Any], step_texts: list[str]) -> str:
    """The digest of {"name", "params", "steps": [definitions]}, in one pass: the steps'
    canonical JSON texts (already hashed for their def_hash) are joined, not encoded again."""
    return of_canonical(
        '{"name":'
        + canonical(name)
        + ',"params":'
        + canonical(params)
        + ',"steps":['
        + ",".join(step_texts)
        + "]}"
    )
