"""``{{ template }}`` evaluation for workflow fields.

Templates are found in string values after the YAML is parsed (never by textual substitution
into the YAML). A string that is exactly one ``{{ expr }}`` evaluates to the expression's Python
value (a DataFrame stays a DataFrame, an int stays an int); any other string renders to text.
Undefined names are errors that name the step and the field.

Templates render in a sandbox stricter than Jinja's ``ImmutableSandboxedEnvironment``: no
attribute starting with ``_``, no mutation of lists and dicts, no modules (names bound to a
module, or names starting with ``_``, are left out of the context), and the only things a
template may call are Jinja's own globals (``range``, ``dict``, ``namespace``...) and the
methods of plain values (``str``, numbers, lists, dicts, dates). A dict or list written into
text renders as JSON (``report: {{ totals }}`` gives ``report: {"sum": 220.0}``). Anything else is a
:class:`~airun_nb.errors.TemplateError` that names the step and the field: computation belongs
in a ``python:`` or ``call:`` step, where the policy sees it.
"""

from __future__ import annotations

import datetime
import decimal
import json
import re
import shlex
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from types import ModuleType
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from airun_nb.errors import TemplateError
from airun_nb.governance.secrets import reads as secret_reads
from airun_nb.settings import caps
from airun_nb.store.redaction import register_secret

_PLAIN = (
    str,
    bytes,
    int,
    float,
    complex,
    bool,
    list,
    tuple,
    dict,
    set,
    frozenset,
    type(None),
    datetime.date,
    datetime.time,
    datetime.timedelta,
    decimal.Decimal,
)


_MAX_REPEAT = 10_000_000  # items or characters of a `'x' * n` or `[0] * n`


# Secret taint: the ``secrets`` namespace counts every value it gives a template
# (:func:`airun_nb.governance.secrets.reads`). A template that read one renders to a string that
# is registered, whole, with the redactor, so no filter (``| reverse``, ``| b64encode``,
# ``.encode().hex()``, a slice) carries the secret past redaction; its error messages are
# withheld.


def _tainted(value: Any, before: int) -> Any:
    """``value`` as rendered; when the render read a secret, as a string registered whole."""
    if secret_reads() == before or isinstance(value, bool) or value is None:
        return value
    text = value if isinstance(value, str) else str(value)
    register_secret(text)
    return text


def _failure(exc: Exception, source: str, *, step: str, field: str, tainted: bool) -> TemplateError:
    """The one-line error for a failed render of ``source``."""
    where = f"step '{step}', field '{field}'"
    if isinstance(exc, TemplateError):
        msg = exc.message
        return exc if msg.startswith("step '") else TemplateError(f"{where}: {msg}")
    if tainted:
        return TemplateError(
            f"{where}: {type(exc).__name__} in a template that reads a secret (its message is "
            f"withheld) in {source.strip()!r}"
        )
    if isinstance(exc, jinja2.UndefinedError):
        return TemplateError(f"{where}: {_undefined_message(exc)} in {source.strip()!r}")
    if isinstance(exc, jinja2.TemplateError):
        return TemplateError(f"{where}: {exc} in {source.strip()!r}")
    return TemplateError(f"{where}: {type(exc).__name__}: {exc} in {source.strip()!r}")


class Sandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, without modules and with calls limited to plain values, and
    with ``*`` and ``**`` bounded: an integer result may not exceed the settings'
    ``template_max_int_bits`` (``9**(9**9)`` is refused before Python computes it), a repeated
    string or list 10 million items."""

    intercepted_binops = frozenset(["*", "**"])

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _check_size(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if isinstance(obj, ModuleType) or isinstance(value, ModuleType):
            return False
        return bool(super().is_safe_attribute(obj, attr, value))

    def is_safe_callable(self, obj: Any) -> bool:
        if not super().is_safe_callable(obj):
            return False
        owner = getattr(obj, "__self__", None)
        if owner is not None and isinstance(owner, _PLAIN):
            return True
        if getattr(obj, "__code__", None) is _FORMAT_WRAPPER:
            return True  # the sandbox's own safe str.format / str.format_map
        return any(obj is g for g in self.globals.values())


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _num(value: int) -> str:
    return str(value) if value.bit_length() <= 64 else f"<a {value.bit_length()}-bit integer>"


def _check_size(operator: str, left: Any, right: Any) -> None:
    bits = caps.template_max_int_bits()
    if _int(left) and _int(right):
        if operator == "**":
            size = right * max(abs(left).bit_length() - 1, 0) if right > 0 else 0
        else:
            size = abs(left).bit_length() + abs(right).bit_length()
        if size > bits:
            raise SecurityError(
                f"{_num(left)} {operator} {_num(right)} is an integer of more than {bits} bits "
                "(template_max_int_bits); refused"
            )
    elif operator == "*":
        seq, n = (left, right) if _int(right) else (right, left)
        if _int(n) and isinstance(seq, (str, bytes, list, tuple)) and len(seq) * n > _MAX_REPEAT:
            raise SecurityError(
                f"repeating {len(seq)} items {n} times is more than {_MAX_REPEAT}; refused"
            )


def as_text(value: Any) -> Any:
    """A value written into text: a dict or list as JSON (what a reader or a parser of the
    text expects, and what the seed runtime wrote), anything else as itself."""
    if isinstance(value, (dict, list, tuple)):
        try:
            return json.dumps(value, default=str, ensure_ascii=False)
        except (TypeError, ValueError):  # a cycle: keep Python's text of it
            return value
    return value


ENV = Sandbox(
    undefined=jinja2.StrictUndefined,
    autoescape=False,
    keep_trailing_newline=True,
    finalize=as_text,
)
_FORMAT_WRAPPER = getattr(ENV.wrap_str_format("".format), "__code__", None)


def _shell_word(value: Any) -> str:
    value = as_text(value)
    return shlex.quote(value if isinstance(value, str) else str(value))


# For the string form of shell.run: every {{ }} output is one shell word (shlex.quote).
SHELL_ENV = Sandbox(
    undefined=jinja2.StrictUndefined,
    autoescape=False,
    keep_trailing_newline=True,
    finalize=_shell_word,
)


def render_with(
    with_: Any, context: Mapping[str, Any], *, step: str, field: str, capability: str
) -> Any:
    """A capability step's ``with:`` rendered; for ``shell.run`` a string ``command`` has each
    template value shell-quoted (:func:`render_shell`)."""
    out = render(with_, context, step=step, field=field)
    command = with_.get("command") if isinstance(with_, Mapping) else None
    if capability == "shell.run" and isinstance(command, str) and isinstance(out, dict):
        out["command"] = render_shell(command, context, step=step, field=f"{field}.command")
    return out


def render_shell(command: str, context: Mapping[str, Any], *, step: str, field: str) -> str:
    """Render a shell command string with each template value shell-quoted, so a value can
    never add words, pipes or commands (``{{ name }}`` with ``x; rm -rf ~`` stays one word)."""
    if not has_template(command):
        return command
    before = secret_reads()
    try:
        rendered = SHELL_ENV.from_string(command).render(**safe_context(context))
    except Exception as exc:
        tainted = secret_reads() != before
        raise _failure(exc, command, step=step, field=field, tainted=tainted) from None
    return str(_tainted(rendered, before))


_WHOLE = re.compile(r"^\s*\{\{(?P<expr>.*?)\}\}\s*$", re.DOTALL)


def has_template(value: str) -> bool:
    return "{{" in value or "{%" in value


def _whole_expression(source: str) -> str | None:
    m = _WHOLE.match(source)
    if m is None:
        return None
    expr = m.group("expr")
    if "{{" in expr or "}}" in expr:
        return None
    return expr.strip()


@lru_cache(maxsize=4096)
def _compiled(source: str) -> Callable[[Mapping[str, Any]], Any]:
    expr = _whole_expression(source)
    if expr is not None:
        fn = ENV.compile_expression(expr, undefined_to_none=False)

        def evaluate(ctx: Mapping[str, Any]) -> Any:
            value = fn(**ctx)
            if isinstance(value, jinja2.Undefined):
                # Force StrictUndefined to raise its own message.
                str(value)
            return value

        return evaluate
    tmpl = ENV.from_string(source)
    return lambda ctx: tmpl.render(**ctx)


def references(source: str) -> tuple[set[str], set[str]]:
    """Return (top-level names, step ids referenced as ``steps.X``) used by a template.

    Raises :class:`TemplateError` on a syntax error.
    """
    try:
        ast = ENV.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"template syntax error: {exc.message}") from None
    for flt in ast.find_all(nodes.Filter):
        if flt.name not in ENV.filters:
            raise TemplateError(f"unknown filter '{flt.name}'")
    for tst in ast.find_all(nodes.Test):
        if tst.name not in ENV.tests:
            raise TemplateError(f"unknown test '{tst.name}'")
    names = {n.name for n in ast.find_all(nodes.Name) if n.ctx == "load"}
    assigned = {n.name for n in ast.find_all(nodes.Name) if n.ctx in ("store", "param")}
    step_refs: set[str] = set()
    for node in ast.find_all(nodes.Getattr):
        if isinstance(node.node, nodes.Name) and node.node.name == "steps":
            step_refs.add(node.attr)
    for item in ast.find_all(nodes.Getitem):
        if (
            isinstance(item.node, nodes.Name)
            and item.node.name == "steps"
            and isinstance(item.arg, nodes.Const)
            and isinstance(item.arg.value, str)
        ):
            step_refs.add(item.arg.value)
    return names - assigned, step_refs


def walk_strings(value: Any, path: str = "") -> Iterable[tuple[str, str]]:
    """Yield (path, string) for every templated string inside a nested value."""
    if isinstance(value, str):
        if has_template(value):
            yield path, value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield from walk_strings(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from walk_strings(v, f"{path}[{i}]")


def safe_context(context: Mapping[str, Any]) -> dict[str, Any]:
    """The names a template may see: no modules, nothing starting with ``_``."""
    return {
        k: v for k, v in context.items() if not k.startswith("_") and not isinstance(v, ModuleType)
    }


def render(value: Any, context: Mapping[str, Any], *, step: str, field: str) -> Any:
    """Render every template inside ``value`` (recursively) against ``context``."""
    ctx = safe_context(context) if _has_any_template(value) else context
    return _render(value, ctx, step=step, field=field)


def _has_any_template(value: Any) -> bool:
    if isinstance(value, str):
        return has_template(value)
    if isinstance(value, Mapping):
        return any(_has_any_template(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_any_template(v) for v in value)
    return False


def _render(value: Any, context: Mapping[str, Any], *, step: str, field: str) -> Any:
    if isinstance(value, str):
        if not has_template(value):
            return value
        before = secret_reads()
        try:
            rendered = _compiled(value)(context)
        except Exception as exc:
            tainted = secret_reads() != before
            raise _failure(exc, value, step=step, field=field, tainted=tainted) from None
        return _tainted(rendered, before)
    if isinstance(value, Mapping):
        return {k: _render(v, context, step=step, field=f"{field}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_render(v, context, step=step, field=f"{field}[{i}]") for i, v in enumerate(value)]
    return value


def evaluate_condition(source: str, context: Mapping[str, Any], *, step: str) -> bool:
    """Evaluate a ``when:`` condition: a ``{{ template }}`` or a bare Jinja expression."""
    text = source if has_template(source) else "{{ " + source + " }}"
    value = render(text, context, step=step, field="when")
    if isinstance(value, str):
        return value.strip().lower() not in ("", "false", "0", "no", "none", "off")
    return bool(value)


def _undefined_message(exc: jinja2.UndefinedError) -> str:
    msg = str(exc.message or exc)
    m = re.match(r"'(\w+)' is undefined", msg)
    if m:
        return f"name '{m.group(1)}' is undefined"
    m = re.match(r"'(.+?)' has no attribute '(.+?)'", msg)
    if m:
        return f"{m.group(1)} has no attribute '{m.group(2)}'"
    return msg
