"""An approval gate's settings: the ``approval:`` mapping of a step, validated."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import date
from typing import Any

from airun_nb.errors import AirunError
from airun_nb.spec.durations import parse_duration

MODES = ("suspend", "wait", "policy")
ON_TIMEOUT = ("approve", "reject", "fail")


class ApprovalError(AirunError):
    """A decision was refused (not an approver, four-eyes, gate not open...)."""


class AlreadyDecided(ApprovalError):
    """The gate already has its decision (or this person already voted)."""


class FormError(ApprovalError):
    """A decision's form values or option are not what the gate asks for (nothing recorded)."""


@dataclass
class GateConfig:
    message: Any = None
    show: Any = None
    approvers: list[str] | None = None
    timeout: float | None = None
    on_timeout: str = "reject"
    mode: str | None = None
    allow_self_approval: bool = False
    notify: Any = None
    four_eyes: bool = False  # the launcher may not decide (also implied by approvers)
    fields: dict[str, Field] = dataclass_field(default_factory=dict)
    options: list[str] = dataclass_field(default_factory=list)
    quorum: int = 1
    require: dict[str, int] = dataclass_field(default_factory=dict)
    reject_quorum: int = 1
    remind: float | None = None  # seconds between reminders while the gate is open
    escalate_after: float | None = None  # seconds after opening when the gate escalates
    escalate_to: list[str] = dataclass_field(default_factory=list)  # approvers it adds

    @property
    def needed(self) -> int:
        """How many distinct approvals close the gate as approved."""
        return max(self.quorum, sum(self.require.values()), 1)

    def form_spec(self) -> dict[str, Any] | None:
        """What the gate's row keeps of its form, options and quorum (JSON-able), or None."""
        if not (
            self.fields
            or self.options
            or self.needed > 1
            or self.reject_quorum > 1
            or self.remind
            or self.escalate_after is not None
        ):
            return None
        spec: dict[str, Any] = {
            "fields": {name: f.as_dict() for name, f in self.fields.items()},
            "options": list(self.options),
            "quorum": self.needed,
            "require": dict(self.require),
            "reject_quorum": self.reject_quorum,
        }
        if self.remind:
            spec["remind"] = self.remind
        if self.escalate_after is not None:
            spec["escalate"] = {"after": self.escalate_after, "to": list(self.escalate_to)}
        return spec


def parse_config(body: Mapping[str, Any] | None, *, step: str) -> GateConfig:
    """Validate an ``approval:`` mapping (called at parse time and at run time)."""
    body = dict(body or {})
    allowed = {
        "message",
        "show",
        "approvers",
        "timeout",
        "on_timeout",
        "mode",
        "allow_self_approval",
        "four_eyes",
        "notify",
        "description",
        "fields",
        "options",
        "quorum",
        "require",
        "reject_quorum",
        "remind",
        "escalate",
    }
    for key in body:
        if key not in allowed:
            raise ApprovalError(
                f"step '{step}': unknown approval key '{key}' (one of {', '.join(sorted(allowed))})"
            )
    approvers = body.get("approvers")
    if isinstance(approvers, str):
        approvers = [approvers]
    if approvers is not None and not (
        isinstance(approvers, list) and all(isinstance(a, str) for a in approvers)
    ):
        raise ApprovalError(f"step '{step}': 'approvers' must be a list of users or role:NAME")
    on_timeout = str(body.get("on_timeout", "reject"))
    if on_timeout not in ON_TIMEOUT:
        raise ApprovalError(f"step '{step}': 'on_timeout' must be one of {', '.join(ON_TIMEOUT)}")
    mode = body.get("mode")
    if mode is not None and mode not in MODES:
        raise ApprovalError(f"step '{step}': 'mode' must be one of {', '.join(MODES)}")
    timeout = body.get("timeout")
    _check_notify(body.get("notify"), step)
    fields = parse_fields(body.get("fields"), step=step)
    options = _options(body.get("options"), step=step)
    require = _require(body.get("require"), step=step)
    quorum = _count(body.get("quorum", 1), "quorum", step)
    reject_quorum = _count(body.get("reject_quorum", 1), "reject_quorum", step)
    remind = body.get("remind")
    remind_s = None
    if remind is not None:
        remind_s = parse_duration(remind, path=f"steps.{step}.approval.remind")
        if remind_s < MIN_FOLLOW_UP:
            raise ApprovalError(f"step '{step}': 'remind' is at least {MIN_FOLLOW_UP:g}s")
    after, to = _escalate(body.get("escalate"), step=step)
    return GateConfig(
        message=body.get("message"),
        show=body.get("show"),
        approvers=approvers,
        timeout=None
        if timeout is None
        else parse_duration(timeout, path=f"steps.{step}.approval.timeout"),
        on_timeout=on_timeout,
        mode=mode,
        allow_self_approval=bool(body.get("allow_self_approval", False)),
        notify=body.get("notify"),
        four_eyes=bool(body.get("four_eyes", False)),
        fields=fields,
        options=options,
        quorum=quorum,
        require=require,
        reject_quorum=reject_quorum,
        remind=remind_s,
        escalate_after=after,
        escalate_to=to,
    )


MIN_FOLLOW_UP = 1.0  # seconds: the shortest reminder period or escalation delay
MAX_REMINDERS = 48  # reminders one gate sends at most, however short its period


def _escalate(raw: Any, *, step: str) -> tuple[float | None, list[str]]:
    """``escalate: {after: 24h, to: role:director}`` -> (seconds, approvers it adds)."""
    if raw is None:
        return None, []
    where = f"step '{step}'"
    if not isinstance(raw, Mapping) or set(raw) - {"after", "to"} or "after" not in raw:
        raise ApprovalError(f"{where}: 'escalate' is {{after: 24h, to: role:director}}")
    after = parse_duration(raw["after"], path=f"steps.{step}.approval.escalate.after")
    if after < MIN_FOLLOW_UP:
        raise ApprovalError(f"{where}: 'escalate.after' is at least {MIN_FOLLOW_UP:g}s")
    to = raw.get("to")
    if isinstance(to, str):
        to = [to]
    if not (isinstance(to, list) and to and all(isinstance(a, str) and a.strip() for a in to)):
        raise ApprovalError(f"{where}: 'escalate.to' names users or role:NAME, e.g. role:director")
    return after, [a.strip() for a in to]


# -- forms, options, quorum ------------------------------------------------------------------
FIELD_TYPES = ("string", "number", "integer", "boolean", "date", "choice")
_FIELD_KEYS = ("type", "required", "default", "choices", "help", "secret", "label")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
MAX_FIELDS = 32
MAX_OPTIONS = 20


@dataclass
class Field:
    """One field of a gate's form."""

    name: str
    type: str = "string"
    required: bool = False
    default: Any = None
    choices: list[Any] | None = None
    help: str | None = None
    secret: bool = False
    label: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "required": self.required}
        for key in ("default", "choices", "help", "label"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.secret:
            out["secret"] = True
            out.pop("default", None)
        return out


def field_from(name: str, raw: Any) -> Field:
    """A field from its stored (already validated) form."""
    raw = raw if isinstance(raw, Mapping) else {"type": raw}
    return Field(
        name=name,
        type=str(raw.get("type") or "string"),
        required=bool(raw.get("required", False)),
        default=raw.get("default"),
        choices=list(raw["choices"]) if raw.get("choices") is not None else None,
        help=raw.get("help"),
        secret=bool(raw.get("secret", False)),
        label=raw.get("label"),
    )


def parse_fields(raw: Any, *, step: str) -> dict[str, Field]:
    """``fields:`` -> {name: Field}; a field may be written as just its type (``amount: number``)."""
    if raw is None:
        return {}
    where = f"step '{step}'"
    if not isinstance(raw, Mapping):
        raise ApprovalError(f"{where}: 'fields' must map field names to {{type: ...}}")
    if len(raw) > MAX_FIELDS:
        raise ApprovalError(f"{where}: at most {MAX_FIELDS} fields, not {len(raw)}")
    out: dict[str, Field] = {}
    for name, spec in raw.items():
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ApprovalError(
                f"{where}: field name {name!r} must be a name such as amount or ticket_id"
            )
        at = f"{where}: field '{name}'"
        if isinstance(spec, str):
            spec = {"type": spec}
        if spec is None:
            spec = {}
        if not isinstance(spec, Mapping):
            raise ApprovalError(f"{at} must be a type name or a mapping (type, required, ...)")
        for key in spec:
            if key not in _FIELD_KEYS:
                raise ApprovalError(f"{at}: unknown key '{key}' (one of {', '.join(_FIELD_KEYS)})")
        kind = spec.get("type", "string")
        if kind not in FIELD_TYPES:
            raise ApprovalError(f"{at}: type must be one of {', '.join(FIELD_TYPES)}, not {kind!r}")
        choices = spec.get("choices")
        if kind == "choice":
            if not (
                isinstance(choices, list)
                and choices
                and all(
                    isinstance(c, (str, int, float)) and not isinstance(c, bool) for c in choices
                )
            ):
                raise ApprovalError(f"{at}: a choice field needs 'choices', a list of values")
            if len({str(c) for c in choices}) != len(choices):
                raise ApprovalError(f"{at}: 'choices' has a value twice")
        elif choices is not None:
            raise ApprovalError(f"{at}: 'choices' is only for type: choice")
        for flag in ("required", "secret"):
            if not isinstance(spec.get(flag, False), bool):
                raise ApprovalError(f"{at}: '{flag}' must be true or false")
        for text in ("help", "label"):
            if spec.get(text) is not None and not isinstance(spec[text], str):
                raise ApprovalError(f"{at}: '{text}' must be text")
        f = Field(
            name=name,
            type=kind,
            required=bool(spec.get("required", False)),
            choices=list(choices) if choices is not None else None,
            help=spec.get("help"),
            secret=bool(spec.get("secret", False)),
            label=spec.get("label"),
        )
        if spec.get("default") is not None:
            try:
                f.default = coerce(f, spec["default"])
            except FormError as exc:
                raise ApprovalError(f"{at}: default {exc.message}") from None
        out[name] = f
    return out


def _check_notify(raw: Any, step: str) -> None:
    """A chat target ``{url: https://..., format: slack | teams | json}`` is checked now."""
    for t in raw if isinstance(raw, list) else [raw]:
        if isinstance(t, Mapping):
            url, fmt = t.get("url"), t.get("format", "json")
            if set(t) - {"url", "format"} or not (
                isinstance(url, str) and url.startswith(("http://", "https://"))
            ):
                raise ApprovalError(
                    f"step '{step}': a notify mapping is {{url: https://..., format: slack}}"
                )
            if fmt not in ("json", "slack", "teams"):
                raise ApprovalError(
                    f"step '{step}': notify format must be json, slack or teams, not {fmt!r}"
                )


def _options(raw: Any, *, step: str) -> list[str]:
    if raw is None:
        return []
    if not (isinstance(raw, list) and raw and all(isinstance(o, str) and o.strip() for o in raw)):
        raise ApprovalError(f"step '{step}': 'options' must be a list of names, e.g. [ship, hold]")
    if len(raw) > MAX_OPTIONS:
        raise ApprovalError(f"step '{step}': at most {MAX_OPTIONS} options, not {len(raw)}")
    if len(set(raw)) != len(raw):
        raise ApprovalError(f"step '{step}': 'options' names an option twice")
    return [str(o) for o in raw]


def _count(raw: Any, key: str, step: str) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= 100:
        raise ApprovalError(f"step '{step}': '{key}' must be a whole number from 1 to 100")
    return raw


def _require(raw: Any, *, step: str) -> dict[str, int]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping) or not raw:
        raise ApprovalError(
            f"step '{step}': 'require' maps a role:NAME or user to a count, e.g. {{role:lead: 1}}"
        )
    out: dict[str, int] = {}
    for group, count in raw.items():
        if not isinstance(group, str) or not group.strip():
            raise ApprovalError(f"step '{step}': 'require' keys are role:NAME or user names")
        out[group] = _count(count, f"require.{group}", step)
    return out


# -- the type check of one value (the form's one check, gates/form.py, calls it per field) ----
MAX_TEXT = 2000
_TRUE = ("true", "yes", "y", "on", "1")
_FALSE = ("false", "no", "n", "off", "0")
_INT = re.compile(r"[+-]?\d{1,18}")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def coerce(f: Field, value: Any) -> Any:
    """``value`` as field ``f``'s type; :class:`FormError` (without the field's name) if not."""
    kind = f.type
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise FormError(f"must be true or false, not {_shown(value)}")
    if kind == "integer":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and _INT.fullmatch(value.strip()):
            return int(value.strip())
        raise FormError(f"must be a whole number, not {_shown(value)}")
    if kind == "number":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if isinstance(value, float) and not math.isfinite(value):
                raise FormError("must be a finite number")
            return value
        if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
            text = value.strip()
            number = int(text) if _INT.fullmatch(text) else float(text)
            if isinstance(number, float) and not math.isfinite(number):
                raise FormError("must be a finite number")
            return number
        raise FormError(f"must be a number, not {_shown(value)}")
    if kind == "date":
        if isinstance(value, date):
            return value.isoformat()[:10]
        if isinstance(value, str):
            try:
                return date.fromisoformat(value.strip()).isoformat()
            except ValueError:
                pass
        raise FormError(f"must be a date YYYY-MM-DD, not {_shown(value)}")
    if kind == "choice":
        for choice in f.choices or []:
            if value == choice or (isinstance(value, str) and value.strip() == str(choice)):
                return choice
        listed = ", ".join(str(c) for c in f.choices or [])
        raise FormError(f"must be one of {listed}, not {_shown(value)}")
    # string
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise FormError(f"must be text, not {_shown(value)}")
    text = str(value)
    if len(text) > MAX_TEXT:
        raise FormError(f"is {len(text)} characters; at most {MAX_TEXT}")
    return text
