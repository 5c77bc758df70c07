"""The run's table looks the same in the cell's output and in a gate widget.

JupyterLab and Notebook 7 style every table in a cell's HTML output with
``:not(.jp-RenderedMarkdown).jp-RenderedHTMLCommon td, th {text-align: right}`` (specificity
0,2,1) and centre it; an ipywidgets HTML is styled by none of that but draws 28 px lines. The
table's own rules must win in both places: left-aligned text columns and headers, its own
padding and line height. (The browser tests check the computed style on a real page.)
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from airun_nb.history.steptable import CSS, RunView, render_html

# JupyterLab 4's rule for tables in rendered HTML outputs (rendermime's base.css)
JUPYTER_RULE = (0, 2, 1)


def _specificity(selector: str) -> tuple[int, int, int]:
    sel = re.sub(r":not\(([^)]*)\)", r" \1 ", selector)  # :not(x) counts as x
    ids = len(re.findall(r"#[\w-]+", sel))
    classes = len(re.findall(r"\.[\w-]+|\[[^\]]*\]|:(?!:)[\w-]+(?:\([^)]*\))?", sel))
    elements = len(re.findall(r"(?:^|[\s>+~])([a-zA-Z][\w-]*)", sel))
    return ids, classes, elements


def _rules(css: str) -> list[tuple[str, dict[str, str]]]:
    body = css.removeprefix("<style>").removesuffix("</style>")
    out = []
    for selectors, decls in re.findall(r"([^{}]+)\{([^}]*)\}", body):
        props = dict(
            (k.strip(), v.strip()) for k, v in (d.split(":", 1) for d in decls.split(";") if d)
        )
        for sel in selectors.split(","):
            out.append((sel.strip(), props))
    return out


def _winning(prop: str, element: str) -> list[tuple[str, str]]:
    """(selector, value) of the table's rules that set ``prop`` on ``element`` cells."""
    return [
        (sel, props[prop])
        for sel, props in _rules(CSS)
        if prop in props and sel.endswith(element) and "airun-table" in sel
    ]


def _view() -> RunView:
    rows = [
        {"step": "review", "kind": "approval", "status": "waiting", "attempts": 1},
        {"step": "ship", "kind": "python", "status": "pending", "attempts": 0},
    ]
    for r in rows:
        r.update(duration=None, note="waiting for approval" if r["step"] == "review" else "")
    return RunView("r-1", "release", "waiting", None, rows)


def test_the_table_carries_its_class_and_its_cells_say_what_they_hold() -> None:
    markup = render_html(_view())
    assert '<table class="airun-table">' in markup
    assert '<div class="airun-run">' in markup
    assert '<td class="num">1</td>' in markup
    assert '<td class="note">waiting for approval' in markup
    assert markup.startswith(CSS)


@pytest.mark.parametrize("element", ["th", "td"])
def test_headers_and_text_columns_are_left_aligned_over_the_front_ends_rule(
    element: str,
) -> None:
    found = _winning("text-align", element)
    assert found, f"no rule aligns the table's {element}"
    for sel, value in found:
        assert value == "left", (sel, value)
        assert _specificity(sel) > JUPYTER_RULE, (sel, _specificity(sel))


def test_numbers_stay_right_aligned_and_columns_keep_apart() -> None:
    (num,) = _winning("text-align", "td.num")
    assert num[1] == "right" and _specificity(num[0]) > JUPYTER_RULE
    for element in ("th", "td"):
        paddings = _winning("padding", element)
        assert paddings
        for sel, value in paddings:
            right = value.split()[1]  # top right bottom left
            assert right.endswith("px") and int(right[:-2]) >= 12, (sel, value)
            assert _specificity(sel) > JUPYTER_RULE
        heights = _winning("line-height", element)
        assert heights and all(float(v) < 2 for _, v in heights)  # not the widget's 28 px
    # JupyterLab centres tables (margin auto) and fixes their layout: the table undoes both
    (table,) = [p for s, p in _rules(CSS) if s.endswith("table.airun-table")]
    assert table["margin"] == "4px 0 0 0" and table["table-layout"] == "auto"


def test_the_gate_widget_draws_the_same_table_with_no_rules_of_its_own(tmp_path: Path) -> None:
    import airun_nb
    from airun_nb.gates import gate
    from airun_nb.history import frames as history
    from airun_nb.jupyter import widgets as gate_widgets
    from airun_nb.store.database import Store

    db = tmp_path / "airun.duckdb"
    wf = airun_nb.Workflow.from_yaml(
        "steps:\n  - id: review\n    approval: {message: go?}\n"
        "  - id: ship\n    needs: [review]\n    python: result = 1\n",
        name="release",
    )
    res = wf.run(db=db)
    assert res.status == "waiting"
    row = gate.gate_row(Store.open(db), res.run_id, "review")
    assert row is not None
    widget = gate_widgets.GateWidget(row, db, {})
    gate_widgets.WATCHER.forget(widget)
    stored = render_html(history.stored_run(res.run_id, db).view)
    elapsed = re.compile(r"\d+\.\d\ds")  # the waiting gate's elapsed time moves on
    assert elapsed.sub("", widget.table.value) == elapsed.sub("", stored)
    assert "airun-table" in widget.table.value
    # the gate's own styles do not restyle tables (so the two cannot differ)
    assert "table" not in gate_widgets._STYLE and "th" not in gate_widgets._STYLE
