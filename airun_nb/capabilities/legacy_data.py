"""The seed runtime's data ids: data.json.parse / stringify / get, text.regex.match,
text.template.render, math.pandas.calculate and io.pdf.extract_table, all read-only (risk low),
with the old inputs and output keys (``data``, ``json_string``, ``value``, ``matches``,
``rendered``, ``calculated_metrics``, ``extracted_tables``) plus ``success: true``.

``io.pdf.extract_table`` needs pdfplumber: ``pip install 'airun_nb[pdf]'``.
"""

from __future__ import annotations

import json
from typing import Any

import regex

from airun_nb.capabilities.registry import CapabilityError, Context, register
from airun_nb.settings import caps


def _loads(value: Any, cap: str, field: str) -> Any:
    if not isinstance(value, str):
        return value  # already data (a template rendered to a list or mapping)
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise CapabilityError(f"{cap}: '{field}' is not JSON ({exc.msg} at {exc.pos})") from None


def _json_parse(args: dict[str, Any], ctx: Context) -> Any:
    if "json_string" not in args:
        raise CapabilityError("data.json.parse needs 'json_string'")
    data = _loads(args["json_string"], "data.json.parse", "json_string")
    return {"data": json.dumps(data, ensure_ascii=False), "success": True}


def _json_stringify(args: dict[str, Any], ctx: Context) -> Any:
    if "data" not in args:
        raise CapabilityError("data.json.stringify needs 'data'")
    data = _loads(args["data"], "data.json.stringify", "data")
    indent = int(args.get("indent", 2)) if args.get("pretty") else None
    text = json.dumps(
        data, indent=indent, ensure_ascii=False, sort_keys=bool(args.get("sort_keys"))
    )
    return {"json_string": text, "success": True}


def _json_get(args: dict[str, Any], ctx: Context) -> Any:
    data = _loads(args.get("json_string"), "data.json.get", "json_string")
    path = str(args.get("path", ""))
    cur: Any = data
    for part in [p for p in path.split(".") if p]:
        try:
            cur = cur[int(part)] if isinstance(cur, list) else cur[part]
        except (KeyError, IndexError, ValueError, TypeError):
            raise CapabilityError(f"data.json.get: no '{path}' in the document") from None
    value = json.dumps(cur, ensure_ascii=False) if isinstance(cur, (dict, list)) else str(cur)
    return {"value": value, "success": True}


_FLAGS = {"ignorecase": regex.IGNORECASE, "multiline": regex.MULTILINE, "dotall": regex.DOTALL}


def _regex_match(args: dict[str, Any], ctx: Context) -> Any:
    """Matches of an untrusted pattern, run by the ``regex`` module with a time limit (the
    settings' ``regex_timeout``): a catastrophic pattern (``(a+)+$``) stops there."""
    flags_list = [str(f).lower() for f in args.get("flags") or []]
    flags = regex.VERSION0
    for name in flags_list:
        flags |= _FLAGS.get(name, 0)
    try:
        compiled = regex.compile(str(args.get("pattern", "")), flags)
    except (regex.error, ValueError, OverflowError) as exc:
        raise CapabilityError(f"text.regex.match: invalid pattern ({exc})") from None
    text = str(args.get("text", ""))
    limit = caps.regex_timeout()
    try:
        if "global" in flags_list:
            found = list(compiled.finditer(text, timeout=limit))
        else:
            found = [m for m in [compiled.search(text, timeout=limit)] if m is not None]
    except TimeoutError:
        raise CapabilityError(
            f"text.regex.match: the pattern took longer than {limit:g} s (regex_timeout); stopped"
        ) from None
    matches = [
        {"match": m.group(0), "groups": list(m.groups()), "start": m.start(), "end": m.end()}
        for m in found
    ]
    return {"matches": matches, "matched": bool(matches), "success": True}


def _template_render(args: dict[str, Any], ctx: Context) -> Any:
    template = str(args.get("template", ""))
    variables = _loads(args.get("variables") or {}, "text.template.render", "variables")
    if not isinstance(variables, dict):
        raise CapabilityError("text.template.render: 'variables' must be a JSON object")
    syntax = str(args.get("syntax", "mustache"))
    forms = {"mustache": "{{{{{}}}}}", "jinja2": "{{{{ {} }}}}"}.get(syntax, "${}")
    out = template
    for key, value in variables.items():
        out = out.replace(forms.format(key), str(value))
    return {"rendered": out, "success": True}


def _frame(data: Any) -> Any:
    import pandas as pd

    data = _loads(data, "math.pandas.calculate", "data")
    if isinstance(data, list) and data and isinstance(data[0], dict) and "rows" in data[0]:
        rows = [r for t in data for r in (t.get("rows") or [])]  # io.pdf.extract_table output
        data = rows or data
    if isinstance(data, list) and data and isinstance(data[0], (list, tuple)):
        df = pd.DataFrame(data[1:], columns=list(data[0]))
    else:
        df = pd.DataFrame(data or [])
    for col in df.columns:  # numbers read from a PDF or JSON text are numbers
        if not pd.api.types.is_numeric_dtype(df[col]):
            converted = pd.to_numeric(df[col], errors="coerce")
            if converted.notna().all():
                df[col] = converted
    return df


def _pandas_calculate(args: dict[str, Any], ctx: Context) -> Any:
    df = _frame(args.get("data"))
    metrics: dict[str, Any] = {}
    for i, op in enumerate(args.get("operations") or []):
        if not isinstance(op, dict):
            raise CapabilityError(f"math.pandas.calculate: operations[{i}] is not a mapping")
        kind = str(op.get("type", "")).strip().lower()
        out = str(op.get("output_column") or "result")
        col = op.get("column")
        if kind in ("sum", "mean", "min", "max", "count", "median"):
            if col not in df.columns:
                raise CapabilityError(f"math.pandas.calculate: no column '{col}'")
            metrics[out] = float(getattr(df[col], kind)())
        elif kind == "calculate" and op.get("formula"):
            try:
                result = df.eval(str(op["formula"]))
            except Exception as exc:  # pandas raises many kinds for a bad formula
                raise CapabilityError(f"math.pandas.calculate: formula failed ({exc})") from None
            metrics[out] = float(result.mean() if hasattr(result, "mean") else result)
        else:
            raise CapabilityError(f"math.pandas.calculate: unknown operation '{kind}'")
    return {"calculated_metrics": metrics, "success": True}


def _pages(spec: Any, count: int) -> list[int]:
    if spec in (None, "", "all"):
        return list(range(count))
    pages: list[int] = []
    for part in str(spec).split(","):
        lo, _, hi = part.strip().partition("-")
        pages.extend(range(int(lo) - 1, int(hi or lo)))
    return [p for p in pages if 0 <= p < count]


def _pdf_extract(args: dict[str, Any], ctx: Context) -> Any:
    try:
        import pdfplumber
    except ImportError:
        raise CapabilityError(
            "io.pdf.extract_table needs pdfplumber: pip install 'airun_nb[pdf]'"
        ) from None
    path = ctx.path(args.get("pdf_path"), field="pdf_path", capability="io.pdf.extract_table")
    if not path.is_file():
        raise CapabilityError(f"io.pdf.extract_table: no file {ctx.workspace.relative(path)}")
    tables = []
    with pdfplumber.open(path) as pdf:
        for i in _pages(args.get("page_range", "all"), len(pdf.pages)):
            for table in pdf.pages[i].extract_tables():
                if not table:
                    continue
                headers = [str(h) if h is not None else "" for h in table[0]]
                rows = [dict(zip(headers, row, strict=False)) for row in table[1:]]
                tables.append({"page": i + 1, "headers": headers, "rows": rows})
    return {"extracted_tables": tables, "success": True}


for _name, _fn, _what in (
    ("data.json.parse", _json_parse, "parse JSON text"),
    ("data.json.stringify", _json_stringify, "JSON text of data"),
    ("data.json.get", _json_get, "a value at a dotted path of JSON text"),
    ("text.regex.match", _regex_match, "regular expression matches"),
    ("text.template.render", _template_render, "fill a template's variables"),
    ("math.pandas.calculate", _pandas_calculate, "sums, means and formulas over rows"),
    ("io.pdf.extract_table", _pdf_extract, "tables of a PDF (needs the pdf extra)"),
):
    # a formula is evaluated by DataFrame.eval, which reaches Python objects: code execution
    _code = "python.exec" if _name == "math.pandas.calculate" else ()
    register(_name, _fn, risk="low", description=_what, plain=False, acts_as=_code)
