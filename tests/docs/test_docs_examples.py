"""Every YAML example in README.md and docs/*.md runs, as the reader would run it.

The blocks are extracted from the files when the suite runs (so a new example is covered the
moment it is written). Each block is one of:

* a workflow (``steps:``, with or without a ``%%workflow NAME`` line): run on a fresh store with
  the functions it calls defined (:data:`FUNCTIONS`, and a permissive stand-in for a name that
  is not listed there); it must end ``completed``, or ``waiting`` at one of its gates;
* a list of steps (a fragment): run after the workflow block before it in the same file when it
  refers to that block's steps, else on its own;
* a policy (``rules:`` / ``default:``): parsed by the policy loader;
* settings (``roles:``, ``approvals:``, ``identity:``...): loaded from an ``airun.yaml``.

A block may opt out only with a visible marker on the line right before it:
``<!-- not-run: why -->``.
"""

from __future__ import annotations

import os
import re
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

import airun_nb
from airun_nb.governance import policy
from airun_nb.settings import file as settings

ROOT = Path(__file__).resolve().parents[2]
_FENCE = re.compile(r"^([ \t]*)```ya?ml[^\n]*\n(.*?)^[ \t]*```", re.M | re.S)
_NOT_RUN = re.compile(r"<!--\s*not-run:\s*\S.*?-->")
_POLICY_KEYS = {"rules", "default"}


@dataclass
class Block:
    path: Path
    line: int
    text: str
    skip: str | None

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks() -> list[Block]:
    out = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text()
        for m in _FENCE.finditer(text):
            before = text[: m.start()].rstrip().splitlines()
            marker = _NOT_RUN.search(before[-1]) if before else None
            body = textwrap.dedent(m.group(2))
            line = text[: m.start()].count("\n") + 1
            out.append(Block(path, line, body, marker.group(0) if marker else None))
    return out


BLOCKS = blocks()


# ------------------------------------------------------------------------------ functions
def load_sales(quarter: str = "2026Q3") -> pd.DataFrame:
    return pd.DataFrame(
        {"region": ["north", "south", "north", None], "amount": [10.0, 20.0, 5.0, None]}
    )


def load_orders() -> pd.DataFrame:
    return pd.DataFrame({"order": [1, 2, 3], "qty": [2, 1, 5]})


def upload_report(path: str) -> dict[str, Any]:
    assert Path(path).exists(), f"{path} does not exist yet"
    return {"id": "upload-1", "path": path}


def write_file(name: str) -> dict[str, Any]:
    Path(name).write_text("written")
    return {"path": name}


def delete_file(path: str) -> None:
    Path(path).unlink(missing_ok=True)


def charge_card(amount: Any = 0) -> dict[str, Any]:
    return {"ok": True, "id": "ch-1", "amount": amount}


def post_announcement(**_: Any) -> dict[str, Any]:
    return {"ok": True}


def ship(**kwargs: Any) -> dict[str, Any]:
    return {"shipped": True, **{k: str(v)[:20] for k, v in kwargs.items()}}


FUNCTIONS = {
    f.__name__: f
    for f in (
        load_sales,
        load_orders,
        upload_report,
        write_file,
        delete_file,
        charge_card,
        post_announcement,
        ship,
    )
}


def stand_in(name: str) -> Any:
    def fn(**kwargs: Any) -> dict[str, Any]:
        return {"ok": True, "id": f"{name}-1", "path": "out.txt", "rows": 1, **kwargs}

    fn.__name__ = name
    return fn


def _calls(doc: Any) -> Iterator[str]:
    if isinstance(doc, dict):
        for key, value in doc.items():
            if key == "call" and isinstance(value, str):
                yield value
            else:
                yield from _calls(value)
    elif isinstance(doc, list):
        for item in doc:
            yield from _calls(item)


# ------------------------------------------------------------------------------ running
def _split_magic(text: str) -> tuple[str | None, str]:
    first, _, rest = text.partition("\n")
    if first.startswith("%%workflow"):
        words = first.split()
        return (words[1] if len(words) > 1 else None), rest
    return None, text


def _workflow_doc(block: Block) -> tuple[str | None, Any]:
    name, body = _split_magic(block.text)
    return name, yaml.safe_load(body)


def _with_previous(block: Block, steps: list[Any]) -> tuple[str | None, dict[str, Any]]:
    """A fragment of steps, joined to the workflow before it when it needs that one's steps."""
    needed = {n for s in steps if isinstance(s, dict) for n in s.get("needs", [])}
    own = {s.get("id") for s in steps if isinstance(s, dict)}
    earlier = [b for b in BLOCKS if b.path == block.path and b.line < block.line]
    for prev in reversed(earlier):
        name, doc = _workflow_doc(prev)
        if isinstance(doc, dict) and isinstance(doc.get("steps"), list):
            ids = {s.get("id") for s in doc["steps"] if isinstance(s, dict)}
            if needed - own and (needed - own) <= ids:
                return name, {**doc, "steps": [*doc["steps"], *steps]}
    return None, {"steps": steps}


def _run(name: str | None, doc: dict[str, Any], tmp: Path) -> None:
    ns: dict[str, Any] = {}
    for target in _calls(doc):
        if ":" not in target:
            ns[target] = FUNCTIONS.get(target) or stand_in(target)
    wf = airun_nb.Workflow.from_dict(doc, name=name or "docs_example")
    res = wf.run(db=tmp / "airun.duckdb", namespace=ns, raise_on_failure=False)
    assert res.status in ("completed", "waiting"), f"{res.status}: {res.error}\n{res!r}"


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AIRUN_IDENTITY", "env")
    monkeypatch.setenv("AIRUN_USER", "alice")
    monkeypatch.delenv("AIRUN_CONFIG", raising=False)
    monkeypatch.delenv("AIRUN_POLICY", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    # `payments:refund` and the like: an importable module for `module:function` targets
    (tmp_path / "payments.py").write_text("def refund(**kwargs):\n    return {'ok': True}\n")
    for folder in ("out", "reports"):
        (tmp_path / folder).mkdir()
    return tmp_path


def test_the_docs_have_yaml_examples() -> None:
    assert len(BLOCKS) >= 10
    assert sum(1 for b in BLOCKS if b.skip) <= len(BLOCKS) // 5, "not-run is for exceptions"


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_every_yaml_example_runs(block: Block, workdir: Path) -> None:
    if block.skip:
        pytest.skip(block.skip)  # the marker is visible in the document itself
    name, doc = _workflow_doc(block)
    if isinstance(doc, list):
        name, doc = _with_previous(block, doc)
    assert isinstance(doc, dict), f"{block.id}: neither a workflow, a policy nor settings"
    if "steps" in doc:
        _run(name, doc, workdir)
    elif _POLICY_KEYS & set(doc):
        policy.parse(doc, source=block.id, check_roles=False)
    else:
        (workdir / "airun.yaml").write_text(block.text)
        os.environ["AIRUN_CONFIG"] = str(workdir / "airun.yaml")
        try:
            loaded = settings.load()
            assert loaded == yaml.safe_load(block.text)
            settings.roles()
        finally:
            del os.environ["AIRUN_CONFIG"]
