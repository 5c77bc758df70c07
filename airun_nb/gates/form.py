"""A gate's form and options: the one check every channel's values go through.

The widget, the page, the dashboard, the CLI (``--set NAME=VALUE``) and the API send values as
text or JSON; :func:`check` turns them into the field types (or refuses with one line naming the
field) before anything is recorded. Secret fields are checked like the others and then kept only
as :data:`REDACTED`: their values never reach the store, the events, the audit trail or a page.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airun_nb.spec.approval import Field, FormError, coerce, field_from

__all__ = ["REDACTED", "check", "coerce", "describe_field", "fields_of", "parse_sets", "redacted"]

REDACTED = "***"


def fields_of(spec: Mapping[str, Any] | None) -> dict[str, Field]:
    """The fields of a gate's stored form spec (``approvals.form_spec``)."""
    raw = (spec or {}).get("fields") or {}
    return {name: field_from(name, value) for name, value in raw.items()}


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def check(
    spec: Mapping[str, Any] | None,
    values: Mapping[str, Any] | None,
    option: Any,
    *,
    approving: bool,
    where: str,
) -> tuple[dict[str, Any], str | None]:
    """Validate a decision's form values and option against the gate's stored spec.

    Returns (the form with every field typed and defaults filled, the option). An approval must
    fill every required field and pick an option when the gate has options; a rejection may
    leave them out (what it sends is still checked). Raises :class:`FormError`, one line, on the
    first problem."""
    fields = fields_of(spec)
    options = list((spec or {}).get("options") or [])
    values = dict(values or {})
    for name in values:
        if name not in fields:
            known = ", ".join(fields) or "none"
            raise FormError(f"{where} has no field '{name}' (its fields: {known})")
    form: dict[str, Any] = {}
    for name, f in fields.items():
        raw = values.get(name)
        if _empty(raw):
            if f.default is not None:
                form[name] = f.default
            elif f.required and approving:
                raise FormError(f"{where}: field '{name}' is required ({_describe(f)})")
            else:
                form[name] = None
            continue
        try:
            form[name] = coerce(f, raw)
        except FormError as exc:
            raise FormError(f"{where}: field '{name}' {exc.message}") from None
    chosen: str | None = None
    if not _empty(option):
        if not options:
            raise FormError(f"{where} has no options; leave the option out")
        text = str(option).strip()
        if text not in options:
            raise FormError(f"{where}: option must be one of {', '.join(options)}, not {text!r}")
        chosen = text
    elif options and approving:
        raise FormError(f"{where}: choose an option: {', '.join(options)}")
    return form, chosen


def redacted(spec: Mapping[str, Any] | None, form: Mapping[str, Any] | None) -> dict[str, Any]:
    """``form`` with the value of every secret field replaced by :data:`REDACTED`."""
    fields = fields_of(spec)
    return {
        name: (REDACTED if fields.get(name) and fields[name].secret and v is not None else v)
        for name, v in (form or {}).items()
    }


def _describe(f: Field) -> str:
    if f.type == "choice":
        return "one of " + ", ".join(str(c) for c in f.choices or [])
    return {
        "date": "a date YYYY-MM-DD",
        "boolean": "true or false",
        "integer": "a whole number",
        "number": "a number",
    }.get(f.type, "text")


def describe_field(f: Field) -> str:
    """A field as one line for a terminal or a notification: ``amount (number, required)``."""
    bits = [f.type if f.type != "choice" else "one of " + "/".join(map(str, f.choices or []))]
    if f.required:
        bits.append("required")
    if f.default is not None and not f.secret:
        bits.append(f"default {f.default}")
    if f.secret:
        bits.append("secret")
    line = f"{f.name} ({', '.join(bits)})"
    return line + (f": {f.help}" if f.help else "")


def parse_sets(pairs: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``["amount=12", "note=a=b"]`` (the CLI's ``--set``) -> {"amount": "12", "note": "a=b"}."""
    out: dict[str, str] = {}
    for pair in pairs:
        name, eq, value = pair.partition("=")
        if not eq or not name.strip():
            raise FormError(f"--set takes NAME=VALUE, not {pair!r}")
        if name.strip() in out:
            raise FormError(f"--set gives field '{name.strip()}' twice")
        out[name.strip()] = value
    return out
