"""Undo after a kernel kill: real kernels driven by nbclient, real SIGKILLs, a fresh kernel that
rolls back (``%workflow rollback RUN``) or re-runs the cell and fails, and the file that the
workflow overwrote with ``fs.write`` holding its ORIGINAL content again, restored exactly once.

Where the kernel dies:

- ``capability:prepared``: the undo record (a backup of the original file) is journaled, the
  write has not happened yet;
- ``step:returned``: the write happened, the step's completion is not recorded yet;
- ``step:recorded``: right after the write's completion is recorded;
- from outside, while a later step sleeps (after it wrote a marker file);
- ``compensate:started``: in the middle of the rollback itself.

"Exactly once" is read from the store of the fresh kernel: one ``undo`` audit row and one
compensation attempt for the step (two when the first rollback was itself killed).
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from nbclient.exceptions import CellExecutionError

from support import crash as cs
from support.crash import Kernel

pytestmark = [pytest.mark.crash, pytest.mark.timeout(240)]

ORIGINAL = "ORIGINAL settings\nmode = safe\nnaïve ünïcode line\n"

WORKFLOW = textwrap.dedent(
    """
    %%workflow deploy_config
    steps:
      - id: write_config
        capability: fs.write
        with: {path: config.txt, content: "NEW settings\\nmode = reckless\\n"}
      - id: after
        needs: [write_config]
        python: |
          import os, pathlib, time
          pathlib.Path("after.marker").write_text(str(os.getpid()))
          if os.environ.get("GOV_SLOW") == "1":
              time.sleep(60)
          if os.environ.get("GOV_FAIL") == "1":
              raise RuntimeError("verification failed")
          result = "ok"
    """
).strip()

STATE = textwrap.dedent(
    """
    import json, pathlib
    import pandas as pd
    import airun_nb

    def _v(x):
        return None if x is None or (not isinstance(x, (list, dict)) and pd.isna(x)) else x

    _runs = airun_nb.runs()
    _rid = str(_runs["run_id"].iloc[-1])
    _att = airun_nb.attempts(_rid)
    _aud = airun_nb.audit(_rid)
    print("STATE " + json.dumps({
        "config": pathlib.Path("config.txt").read_text(),
        "run_id": _rid,
        "runs": [[str(a), str(b)] for a, b in _runs[["run_id", "status"]].values.tolist()],
        "steps": {
            r["step_id"]: {
                "status": r["status"],
                "attempts": int(r["attempts"]),
                "compensation": json.loads(r["compensation"]) if _v(r["compensation"]) else None,
                "comp_status": _v(r["comp_status"]),
            }
            for r in airun_nb.steps(_rid).to_dict("records")
        },
        "execute": [[str(s), int(a), str(t)] for s, a, t in
                    _att[_att["phase"] == "execute"][["step_id", "attempt", "status"]].values.tolist()],
        "compensate": [[str(s), int(a), str(t)] for s, a, t in
                       _att[_att["phase"] == "compensate"][["step_id", "attempt", "status"]].values.tolist()],
        "audit": [[str(k), str(s), str(d)] for k, s, d in
                  _aud[["kind", "step_id", "decision"]].values.tolist()],
    }, default=str))
    """
).strip()


def state(k: Kernel) -> dict[str, Any]:
    text = cs.text_of(k.run(STATE))
    line = next(ln for ln in text.splitlines() if ln.startswith("STATE "))
    return json.loads(line[len("STATE ") :])


def setup(tmp_path: Path) -> Path:
    work = tmp_path / "nb"
    work.mkdir()
    (work / "config.txt").write_text(ORIGINAL)
    return work


def config(work: Path) -> str:
    return (work / "config.txt").read_text()


def die_in(work: Path, *pre: str) -> None:
    """A kernel runs ``pre`` cells, then the workflow cell, during which it must die."""
    with Kernel(work) as k:
        k.run("%load_ext airun_nb")
        for src in pre:
            k.run(src)
        k.run_expecting_death(WORKFLOW)


def undo_rows(st: dict[str, Any], step: str = "write_config") -> list[list[str]]:
    return [row for row in st["audit"] if row[0] == "undo" and row[1] == step]


def rollback_in_a_fresh_kernel(work: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``%workflow rollback RUN`` in a new kernel; a second rollback is refused and changes
    nothing. Returns the state before and after."""
    with Kernel(work) as k:
        k.run("%load_ext airun_nb")
        before = state(k)
        assert before["runs"] == [[before["run_id"], "running"]]  # its kernel died
        k.run(f"%workflow rollback {before['run_id']}")
        after = state(k)
        with pytest.raises(CellExecutionError, match="already rolled back"):
            k.run(f"%workflow rollback {before['run_id']}")
        again = state(k)
    assert undo_rows(again) == undo_rows(after)
    assert again["config"] == after["config"]
    return before, after


def assert_undone_once(st: dict[str, Any], *, attempts: int = 1) -> None:
    assert st["config"] == ORIGINAL
    assert st["runs"][-1][1] == "rolled_back"
    assert st["steps"]["write_config"]["comp_status"] == "done"
    assert undo_rows(st) == [["undo", "write_config", "done"]]
    comp = [row for row in st["compensate"] if row[0] == "write_config"]
    assert [row[1] for row in comp] == list(range(1, attempts + 1))
    assert comp[-1][2] == "completed"


def assert_undo_journaled(work: Path, st: dict[str, Any]) -> None:
    rec = st["steps"]["write_config"]["compensation"]
    assert rec is not None, "the undo record was not journaled before the effect"
    assert rec["undo"] == "fs.write"
    assert rec["prepared_attempt"] == 1
    backup = Path(rec["with"]["backup"])
    assert backup.read_text() == ORIGINAL
    assert work / "airun.duckdb.undo" / st["run_id"] / "write_config" in backup.parents


# -- the kernel dies after the undo was journaled, before the write ------------------------------
def test_killed_after_the_undo_was_journaled_then_rolled_back(tmp_path: Path) -> None:
    work = setup(tmp_path)
    die_in(work, "import os; os.environ['AIRUN_CRASH_AT'] = 'capability:prepared'")
    assert config(work) == ORIGINAL  # the write never happened

    before, after = rollback_in_a_fresh_kernel(work)
    assert before["steps"]["write_config"]["status"] == "running"
    assert_undo_journaled(work, before)
    # The runtime cannot know whether the write happened before the kill: it must undo.
    assert_undone_once(after)


def test_killed_after_the_undo_was_journaled_then_rerun_and_failed(tmp_path: Path) -> None:
    work = setup(tmp_path)
    die_in(work, "import os; os.environ['AIRUN_CRASH_AT'] = 'capability:prepared'")
    assert config(work) == ORIGINAL

    with Kernel(work) as k:
        k.run("%load_ext airun_nb")
        k.run("import os; os.environ['GOV_FAIL'] = '1'")
        with pytest.raises(CellExecutionError, match="verification failed"):
            k.run(WORKFLOW)  # resumes the dead run: attempt 2 writes, 'after' fails, rollback
        st = state(k)
    assert len(st["runs"]) == 1  # the same run resumed, no new one
    first_try, second_try = st["execute"][:2]
    assert first_try[:2] == ["write_config", 1] and first_try[2] != "completed"  # the dead one
    assert second_try == ["write_config", 2, "completed"]
    # attempt 2 reused the undo captured by attempt 1 (before any write)
    assert st["steps"]["write_config"]["compensation"]["prepared_attempt"] == 1
    assert_undone_once(st)


# -- the kernel dies after the write -------------------------------------------------------------
def test_killed_after_the_write_before_its_record_then_rolled_back(tmp_path: Path) -> None:
    work = setup(tmp_path)
    die_in(work, "import os; os.environ['AIRUN_CRASH_AT'] = 'step:returned'")
    assert config(work) == "NEW settings\nmode = reckless\n"  # the write happened

    before, after = rollback_in_a_fresh_kernel(work)
    assert before["steps"]["write_config"]["status"] == "running"
    assert_undo_journaled(work, before)
    assert_undone_once(after)


def test_killed_right_after_the_write_was_recorded_then_rolled_back(tmp_path: Path) -> None:
    work = setup(tmp_path)
    die_in(work, "import os; os.environ['AIRUN_CRASH_AT'] = 'step:recorded'")
    assert config(work) == "NEW settings\nmode = reckless\n"

    before, after = rollback_in_a_fresh_kernel(work)
    assert before["steps"]["write_config"]["status"] == "completed"
    assert_undone_once(after)


def test_killed_from_outside_during_a_later_step_then_rolled_back(tmp_path: Path) -> None:
    work = setup(tmp_path)
    marker = work / "after.marker"
    with Kernel(work) as k:
        k.run("%load_ext airun_nb")
        k.run("import os; os.environ['GOV_SLOW'] = '1'")
        with cs.killer(k, when=marker.exists) as kill:
            k.run_expecting_death(WORKFLOW)
        assert kill["killed"], kill
    assert config(work) == "NEW settings\nmode = reckless\n"

    before, after = rollback_in_a_fresh_kernel(work)
    assert before["steps"]["write_config"]["status"] == "completed"
    assert before["steps"]["after"]["status"] == "running"
    assert_undone_once(after)
    assert after["steps"]["after"]["comp_status"] is None  # nothing to undo there


def test_killed_during_the_rollback_then_the_rollback_finishes(tmp_path: Path) -> None:
    work = setup(tmp_path)
    die_in(work, "import os; os.environ['AIRUN_CRASH_AT'] = 'step:recorded'")
    run_id = None
    with Kernel(work) as k:
        k.run("%load_ext airun_nb")
        run_id = state(k)["run_id"]
        k.run("import os; os.environ['AIRUN_CRASH_AT'] = 'compensate:started'")
        k.run_expecting_death(f"%workflow rollback {run_id}")
    assert config(work) == "NEW settings\nmode = reckless\n"  # killed before the undo ran

    with Kernel(work) as k:
        k.run("%load_ext airun_nb")
        mid = state(k)
        assert mid["runs"] == [[run_id, "rolling_back"]]
        k.run(f"%workflow rollback {run_id}")
        st = state(k)
    assert_undone_once(st, attempts=2)  # the killed attempt, then the one that ran
