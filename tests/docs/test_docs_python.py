"""The Python examples of README.md and the notebook-facing docs run as a reader pastes them.

Each file's ``python`` blocks and ``%%workflow`` YAML blocks run in order, as the cells of one
notebook, in a real IPython shell with the extension available, in an empty folder with a
fresh store. Every cell must run without an error, and a ``print(...)`` line whose comment
shows what it prints (``print(x)   # 10 -> 20``) must print that.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FILES = ["README.md", "docs/notebooks.md", "docs/history.md"]
_FENCE = re.compile(r"^```(python|ya?ml)[^\n]*\n(.*?)^```", re.M | re.S)
_SAYS = re.compile(r"^\s*print\(.*\)\s+#\s*(.+?)\s*$", re.M)


def cells(name: str) -> list[tuple[int, str]]:
    text = (ROOT / name).read_text()
    out = []
    for m in _FENCE.finditer(text):
        body = textwrap.dedent(m.group(2))
        if m.group(1) != "python" and not body.startswith("%%workflow"):
            continue  # a policy or settings file: tests/docs/test_docs_examples.py loads those
        out.append((text[: m.start()].count("\n") + 1, body))
    return out


@pytest.mark.parametrize("name", FILES)
def test_python_examples_run_in_order(
    name: str, ipython, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    found = cells(name)
    assert found, f"{name} has no Python example"
    monkeypatch.chdir(tmp_path)
    for line, code in found:
        capsys.readouterr()
        result = ipython.run_cell(code)
        out = capsys.readouterr().out
        where = f"{name}:{line}"
        assert result.error_before_exec is None, f"{where}: {result.error_before_exec}"
        assert result.error_in_exec is None, f"{where}: {result.error_in_exec}\n{out}"
        for said in _SAYS.findall(code):
            assert said in out, f"{where}: expected {said!r} in the output:\n{out}"
