"""A run's step table and its timeline in JupyterLab's dark theme, seen through headless Chromium.

The front end (JupyterLab and Notebook 7 for the dark theme, JupyterLab for the light one) is
switched to a theme before a notebook shows a stored run (one completed step, one failed step)
with ``%workflow show`` and ``%workflow timeline``. The table's text and its status colours are
read from the browser's computed styles and must contrast with the background the cell is drawn
on; the timeline's screenshot must show that background with text and bars on it (in the dark
theme: not a white slab). The contrast ratios and pixel shares are printed (``-s``).
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import numpy as np
import pytest
from PIL import Image

import airun_nb
from support.notebooks import python_notebook

RUN = """\
on_failure: stop
steps:
  - id: fetch
    python: result = 1
  - id: load
    needs: [fetch]
    python: raise ValueError("the table is locked")
"""

# the colour a cell's output is drawn on: the first opaque background up the tree
_JS_COLOURS = """
el => {
  const bg = e => {
    for (; e; e = e.parentElement) {
      const c = getComputedStyle(e).backgroundColor;
      if (c && c !== 'transparent' && !/rgba\\(.*,\\s*0\\)$/.test(c)) return c;
    }
    return getComputedStyle(document.body).backgroundColor;
  };
  const cells = [...el.querySelectorAll('tbody td')];
  const status = name => cells.find(td => td.textContent.trim() === name);
  return {
    background: bg(el),
    text: getComputedStyle(el.querySelector('tbody td:nth-child(2)')).color,
    heading: getComputedStyle(el.querySelector('th')).color,
    completed: getComputedStyle(status('completed')).color,
    failed: getComputedStyle(status('failed')).color,
    human: getComputedStyle(el).getPropertyValue('--airun-human-color').trim(),
  };
}
"""


def _rgba(css: str) -> tuple[float, float, float, float]:
    parts = [float(p) for p in re.findall(r"[\d.]+", css)]
    return (parts[0], parts[1], parts[2], parts[3] if len(parts) > 3 else 1.0)


def _luminance(rgb: tuple[float, float, float]) -> float:
    def channel(v: float) -> float:
        v /= 255
        return v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(v) for v in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(fg_css: str, bg_css: str) -> float:
    """WCAG contrast ratio of a (possibly translucent) text colour over an opaque background."""
    fr, fg, fb, fa = _rgba(fg_css)
    br, bgr, bb, _ = _rgba(bg_css)
    shown = (fr * fa + br * (1 - fa), fg * fa + bgr * (1 - fa), fb * fa + bb * (1 - fa))
    hi, lo = sorted((_luminance(shown), _luminance((br, bgr, bb))), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def _notebook(path: Path, run_id: str) -> None:
    nb = python_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(c)
        for c in ("%load_ext airun_nb", f"%workflow show {run_id}", f"%workflow timeline {run_id}")
    ]
    nbformat.write(nb, str(path))


def _show(lab, theme: str, light: str) -> tuple[object, dict[str, str]]:
    """JupyterLab in ``theme``, a notebook showing a failed run's table and timeline; the page
    and the table's computed colours."""
    db = lab.root / "airun.duckdb"
    res = airun_nb.Workflow.from_yaml(RUN, name="nightly").run(db=db, raise_on_failure=False)
    assert res.status == "failed"
    _notebook(lab.root / "theme.ipynb", res.run_id)
    page = lab.start(
        env={
            "AIRUN_DB": str(db),
            "AIRUN_USER": "alice",
            "AIRUN_IDENTITY": "env",
            "AIRUN_CONFIG": "",
        }
    )
    page.open_notebook("theme.ipynb")
    page.page.evaluate(
        "theme => window.jupyterapp.commands.execute('apputils:change-theme', {theme})", theme
    )
    page.page.wait_for_function(
        "light => document.body.dataset.jpThemeLight === light",
        arg=light,
        timeout=60_000,
        polling=100,
    )
    page.run_all(timeout=120)
    table = page.page.locator(".jp-OutputArea-output .airun-run").first
    table.wait_for(state="visible", timeout=60_000)
    return page, table.evaluate(_JS_COLOURS)


def _timeline(lab, page, name: str) -> np.ndarray:
    img = page.page.locator(".jp-OutputArea-output .airun-timeline img").first
    img.wait_for(state="visible", timeout=60_000)
    assert img.evaluate("e => e.complete && e.naturalWidth") > 300
    shot = Image.open(page.element_screenshot(img, lab.shot(name))).convert("RGB")
    return np.asarray(shot).reshape(-1, 3).astype(int)


def _ink(pixels: np.ndarray) -> float:
    """The share of mid-grey pixels: the timeline's text, ticks, axes and grid."""
    return float(
        (
            (np.ptp(pixels, axis=1) < 20) & (pixels.min(axis=1) > 90) & (pixels.max(axis=1) < 200)
        ).mean()
    )


def _ratios(c: dict[str, str]) -> dict[str, float]:
    return {k: contrast(c[k], c["background"]) for k in ("text", "heading", "completed", "failed")}


@pytest.mark.browser
@pytest.mark.timeout(300)
def test_the_step_table_and_the_timeline_follow_the_dark_theme(jupyter) -> None:
    """In JupyterLab Dark (in JupyterLab and in Notebook 7), the table's text and its green/red statuses stand out from the dark
    background (contrast >= 4.5, WCAG AA for text), the purple of a gate is the lighter one, and
    the timeline is drawn on that background (almost no white pixels) with grey text on it."""
    page, c = _show(jupyter, "JupyterLab Dark", "false")
    assert _luminance(_rgba(c["background"])[:3]) < 0.05, f"not a dark background: {c}"
    ratios = _ratios(c)
    assert all(r >= 4.5 for r in ratios.values()), (ratios, c)
    assert _rgba(c["failed"])[0] > _rgba(c["failed"])[1] + 60, f"failed is not red: {c}"
    assert _rgba(c["completed"])[1] > _rgba(c["completed"])[0] + 40, f"not green: {c}"
    assert c["human"] == "#b083f0", c
    page.element_screenshot(page.page.locator(".airun-run").first, jupyter.shot("dark-step-table"))

    pixels = _timeline(jupyter, page, "dark-timeline")
    white = float((pixels.min(axis=1) >= 230).mean())
    dark = float((pixels.max(axis=1) <= 60).mean())
    assert white < 0.02, f"{white:.1%} of the timeline is near white"
    assert dark > 0.5, f"only {dark:.1%} of the timeline is the dark background"
    assert _ink(pixels) > 0.002, "no readable text or axes on the timeline"
    page.screenshot(jupyter.shot("dark-theme"))
    print(
        f"dark: contrast {ratios}; near-white {white:.4f}; dark {dark:.3f}; ink {_ink(pixels):.4f}"
    )


@pytest.mark.browser
@pytest.mark.timeout(300)
def test_the_step_table_and_the_timeline_stay_readable_in_the_light_theme(lab) -> None:
    """In JupyterLab Light, the same table's text and statuses contrast with the white background
    (>= 3) and the timeline, drawn without a background of its own, shows on white with its
    grey text and its bars."""
    page, c = _show(lab, "JupyterLab Light", "true")
    assert _luminance(_rgba(c["background"])[:3]) > 0.9, f"not a light background: {c}"
    ratios = _ratios(c)
    assert all(r >= 3 for r in ratios.values()), (ratios, c)
    assert c["human"] == "", c  # the light purple is the fallback, no override
    pixels = _timeline(lab, page, "light-timeline")
    white = float((pixels.min(axis=1) >= 230).mean())
    assert white > 0.5, f"only {white:.1%} of the timeline is the white page"
    assert _ink(pixels) > 0.002, "no readable text or axes on the timeline"
    coloured = float((np.ptp(pixels, axis=1) > 80).mean())
    assert coloured > 0.01, "no coloured bars on the timeline"
    print(f"light: contrast {ratios}; near-white {white:.4f}; ink {_ink(pixels):.4f}")
