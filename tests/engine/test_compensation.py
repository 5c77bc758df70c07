"""Compensation and rollback (the saga): order, retries, rollback_failed and finishing it, on_failure,
check, on-demand undo, and the front ends (Python API, ``%workflow rollback``, ``airun rollback``).

Every test uses a real DuckDB store in ``tmp_path`` and real files on disk as the side effects that
compensations undo. Nothing is mocked. Crash tests (real SIGKILLs) are in
``test_compensation_crash.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import airun_nb
from airun_nb import AirunError, RunBusy, RunEnded, Workflow, WorkflowFailed
from airun_nb.engine.ledger import Listener

# -- fixtures and helpers (local on purpose: no shared conftest is relied on) -------------------


@pytest.fixture
def store(store_db: Any) -> Any:
    """A fresh store, a DuckDB file or a PostgreSQL database (every test runs on both);
    ``AIRUN_DB`` points at it so every default lookup finds it."""
    return store_db


class Saga:
    """Side effects on disk: ``create`` writes a file, ``delete`` removes it (a compensation).

    ``undone`` records the order in which compensations ran (file names), ``calls`` counts every
    call of every function (``do:NAME`` / ``undo:NAME``), whatever the store says.
    """

    def __init__(self, root: Path) -> None:
        self.dir = root / "files"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.undone: list[str] = []
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    def path(self, name: str) -> str:
        return str(self.dir / name)

    def create(self, name: str) -> dict[str, str]:
        with self._lock:
            self.calls[f"do:{name}"] += 1
        p = self.dir / name
        p.write_text(f"made by step for {name}\n")
        return {"path": str(p), "name": name}

    def delete(self, path: str) -> None:
        name = Path(path).name
        with self._lock:
            self.calls[f"undo:{name}"] += 1
            self.undone.append(name)
        Path(path).unlink()

    def files(self) -> list[str]:
        return sorted(p.name for p in self.dir.iterdir())

    def ns(self, **extra: Any) -> dict[str, Any]:
        return {"create": self.create, "delete": self.delete, **extra}


@pytest.fixture
def saga(tmp_path: Path) -> Saga:
    return Saga(tmp_path)


def boom() -> None:
    raise RuntimeError("disk full")


def file_step(step_id: str, name: str, needs: list[str] | None = None, **extra: str) -> str:
    """YAML of a step that creates file NAME and whose compensation deletes it."""
    lines = [
        f"  - id: {step_id}",
        "    call: create",
        f"    with: {{name: {name}}}",
        f'    compensate: {{call: delete, with: {{path: "{{{{ steps.{step_id}.output.path }}}}"}}}}',
    ]
    if needs:
        lines.insert(1, f"    needs: [{', '.join(needs)}]")
    lines += [f"    {k}: {v}" for k, v in extra.items()]
    return "\n".join(lines)


def workflow(name: str, *steps: str, head: str = "") -> Workflow:
    text = f"name: {name}\n{head}steps:\n" + "\n".join(steps) + "\n"
    return Workflow.from_yaml(text)


def step_rows(run_id: str, db: Path) -> dict[str, dict[str, Any]]:
    df = airun_nb.steps(run_id, db=db)
    return {r["step_id"]: r for r in df.to_dict("records")}


def comp_status(rows: dict[str, dict[str, Any]], step_id: str) -> str | None:
    v = rows[step_id]["comp_status"]
    return None if _isna(v) else str(v)


def _isna(v: Any) -> bool:
    import pandas as pd

    return bool(pd.isna(v))


def never_started(rows: dict[str, dict[str, Any]], step_id: str) -> bool:
    """A step the run never reached: no row at all, or a pending row with nothing undone."""
    row = rows.get(step_id)
    return row is None or (row["status"] == "pending" and comp_status(rows, step_id) is None)


def run_row(run_id: str, db: Path) -> dict[str, Any]:
    df = airun_nb.runs(db=db)
    rows = df[df["run_id"] == run_id].to_dict("records")
    assert len(rows) == 1, f"run {run_id} not found once in {df['run_id'].tolist()}"
    return rows[0]


def comp_attempts(run_id: str, db: Path, step_id: str) -> list[tuple[int, str]]:
    df = airun_nb.attempts(run_id, db=db)
    df = df[(df["step_id"] == step_id) & (df["phase"] == "compensate")].sort_values("attempt")
    return [(int(a), str(s)) for a, s in zip(df["attempt"], df["status"], strict=True)]


def event_kinds(run_id: str, db: Path) -> list[tuple[str, str | None]]:
    df = airun_nb.events(run_id, db=db)
    return [
        (str(k), None if _isna(s) else str(s))
        for k, s in zip(df["kind"], df["step_id"], strict=True)
    ]


def run_failing(wf: Workflow, **kwargs: Any) -> WorkflowFailed:
    with pytest.raises(WorkflowFailed) as info:
        wf.run(**kwargs)
    return info.value


class _Recorded(Listener):
    """An event per step, set once the engine has recorded that step in ``status``."""

    def __init__(self, status: str, *steps: str) -> None:
        self.status = status
        self.seen = {step: threading.Event() for step in steps}

    def changed(self, run: Any, state: Any) -> None:
        if state is not None and state.status == self.status and state.id in self.seen:
            self.seen[state.id].set()


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll until ``predicate()`` holds (a wait, not an assertion on how long it took)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


# -- (a) the basic saga ---------------------------------------------------------------------------


def test_failure_rolls_back_finished_steps_newest_first(store: Path, saga: Saga) -> None:
    wf = workflow(
        "two_files",
        file_step("make_a", "A.txt"),
        file_step("make_b", "B.txt", needs=["make_a"]),
        "  - id: publish\n    needs: [make_b]\n    call: boom",
    )
    exc = run_failing(wf, namespace=saga.ns(boom=boom))

    assert saga.files() == [], "both files must be deleted by their compensations"
    assert saga.undone == ["B.txt", "A.txt"]
    assert saga.calls == Counter({"do:A.txt": 1, "do:B.txt": 1, "undo:A.txt": 1, "undo:B.txt": 1})
    assert exc.status == "rolled_back"
    assert "rolled back" in str(exc)
    assert "publish" in str(exc) and "disk full" in str(exc)

    row = run_row(exc.run_id, store)
    assert row["status"] == "rolled_back"
    assert row["failed_step"] == "publish"
    rows = step_rows(exc.run_id, store)
    assert {s: rows[s]["status"] for s in rows} == {
        "make_a": "completed",
        "make_b": "completed",
        "publish": "failed",
    }
    assert comp_status(rows, "make_a") == comp_status(rows, "make_b") == "done"
    assert comp_status(rows, "publish") is None  # failed, no compensate_on_failure: left alone
    # The compensation was rendered when the step finished, from the step's own output.
    assert saga.path("B.txt") in str(rows["make_b"]["compensation"])
    assert comp_attempts(exc.run_id, store, "make_b") == [(1, "completed")]
    assert comp_attempts(exc.run_id, store, "make_a") == [(1, "completed")]

    # One event row per transition, compensations newest first.
    kinds = event_kinds(exc.run_id, store)
    assert Counter(k for k, _ in kinds) == Counter(
        {
            "run_started": 1,
            "step_failed": 1,
            "run_rolling_back": 1,
            "compensation_done": 2,
            "run_rolled_back": 1,
        }
    )
    assert [s for k, s in kinds if k == "compensation_done"] == ["make_b", "make_a"]
    order = [k for k, _ in kinds]
    assert order.index("step_failed") < order.index("run_rolling_back")
    assert order.index("run_rolling_back") < order.index("compensation_done")
    assert order[-1] == "run_rolled_back"


def test_step_without_compensate_has_nothing_to_undo(store: Path, saga: Saga) -> None:
    wf = workflow(
        "plain_middle",
        file_step("make_a", "A.txt"),
        "  - id: note\n    needs: [make_a]\n    python: |\n      result = {'n': 1}",
        "  - id: fail\n    needs: [note]\n    call: boom",
    )
    result = wf.run(namespace=saga.ns(boom=boom), raise_on_failure=False)
    assert result.status == "rolled_back"
    rows = step_rows(result.run_id, store)
    assert comp_status(rows, "note") == "none"
    assert comp_status(rows, "make_a") == "done"
    assert saga.files() == []
    shown = result.steps.set_index("step")
    assert shown.loc["note", "note"] == "nothing to undo"
    assert shown.loc["make_a", "status"] == "undone"
    assert shown.loc["fail", "status"] == "failed"


# -- (c) retries of a compensation ----------------------------------------------------------------


@pytest.mark.parametrize("how", ["raises", "returns_exception"])
def test_compensation_failing_twice_then_succeeding(store: Path, saga: Saga, how: str) -> None:
    tries: list[str] = []

    def flaky_delete(path: str) -> Any:
        tries.append(path)
        if len(tries) <= 2:
            err = ConnectionError(f"storage offline (try {len(tries)})")
            if how == "raises":
                raise err
            return err  # an error value counts as a failure too
        saga.delete(path)
        return None

    wf = workflow(
        "flaky_undo",
        "  - id: make_a\n    call: create\n    with: {name: A.txt}\n"
        '    compensate: {call: flaky_delete, with: {path: "{{ steps.make_a.output.path }}"}}',
        "  - id: fail\n    needs: [make_a]\n    call: boom",
    )
    exc = run_failing(wf, namespace=saga.ns(boom=boom, flaky_delete=flaky_delete))

    assert exc.status == "rolled_back"
    assert len(tries) == 3
    assert saga.files() == []
    assert comp_attempts(exc.run_id, store, "make_a") == [
        (1, "failed"),
        (2, "failed"),
        (3, "completed"),
    ]
    rows = step_rows(exc.run_id, store)
    assert comp_status(rows, "make_a") == "done"
    assert int(rows["make_a"]["comp_attempts"]) == 3
    kinds = Counter(k for k, _ in event_kinds(exc.run_id, store))
    assert kinds["compensation_retry"] == 2
    assert kinds["compensation_done"] == 1
    assert kinds["compensation_failed"] == 0


def test_compensation_retry_and_timeout_settings_are_honoured(store: Path, saga: Saga) -> None:
    calls: list[str] = []

    def stuck(path: str) -> None:
        calls.append(path)
        time.sleep(3)

    wf = workflow(
        "stuck_undo",
        "  - id: make_a\n    call: create\n    with: {name: A.txt}\n"
        '    compensate: {call: stuck, with: {path: "{{ steps.make_a.output.path }}"}, '
        "retry: {attempts: 2, initial: 0.01}, timeout: 0.2s}",
        "  - id: fail\n    needs: [make_a]\n    call: boom",
    )
    exc = run_failing(wf, namespace=saga.ns(boom=boom, stuck=stuck))
    assert exc.status == "rollback_failed"
    assert len(calls) == 2  # retry.attempts: 2, not the default 3
    atts = comp_attempts(exc.run_id, store, "make_a")
    assert atts == [(1, "failed"), (2, "failed")]
    err = airun_nb.attempts(exc.run_id, db=store)
    err = err[(err["phase"] == "compensate")]["error"].tolist()
    assert all("timed out" in str(e) for e in err), err


# -- (d) rollback_failed, and finishing it ---------------------------------------------------------


def test_rollback_failed_then_fixed_in_namespace_and_finished(store: Path, saga: Saga) -> None:
    def remove_a(path: str) -> None:
        raise PermissionError(f"{Path(path).name} is read-only")

    ns = saga.ns(boom=boom, remove_a=remove_a)
    wf = workflow(
        "half_undone",
        file_step("make_z", "Z.txt"),
        "  - id: make_a\n    needs: [make_z]\n    call: create\n    with: {name: A.txt}\n"
        '    compensate: {call: remove_a, with: {path: "{{ steps.make_a.output.path }}"}}',
        file_step("make_b", "B.txt", needs=["make_a"]),
        "  - id: fail\n    needs: [make_b]\n    call: boom",
    )
    exc = run_failing(wf, namespace=ns)

    assert exc.status == "rollback_failed"
    assert "rollback failed" in str(exc) and "make_a" in str(exc)
    assert "%workflow rollback" in str(exc) and "read-only" in str(exc)
    assert saga.undone == ["B.txt"]  # make_z is older than the failing one: not attempted
    assert saga.files() == ["A.txt", "Z.txt"]
    rows = step_rows(exc.run_id, store)
    assert comp_status(rows, "make_b") == "done"
    assert comp_status(rows, "make_a") == "failed"
    assert "read-only" in str(rows["make_a"]["comp_error"])
    assert int(rows["make_a"]["comp_attempts"]) == 3
    assert comp_status(rows, "make_z") is None
    assert run_row(exc.run_id, store)["status"] == "rollback_failed"
    kinds = Counter(k for k, _ in event_kinds(exc.run_id, store))
    assert kinds["compensation_failed"] == 1 and kinds["run_rollback_failed"] == 1
    assert kinds["run_rolled_back"] == 0

    # Re-running the workflow does not start over on top of a half-undone run.
    with pytest.raises(RunBusy) as refused:
        Workflow.from_yaml(wf.spec.source).run(namespace=ns)
    assert "%workflow rollback" in str(refused.value) and exc.run_id in str(refused.value)
    assert saga.calls["do:A.txt"] == 1

    # Fix the compensation in the namespace, finish the rollback.
    def remove_a_fixed(path: str) -> None:
        saga.delete(path)

    ns["remove_a"] = remove_a_fixed
    result = airun_nb.rollback(exc.run_id, db=store, namespace=ns)

    assert result.status == "rolled_back"
    assert saga.files() == []
    assert saga.undone == ["B.txt", "A.txt", "Z.txt"]
    assert saga.calls["undo:B.txt"] == 1, "a finished compensation must not run again"
    rows = step_rows(exc.run_id, store)
    assert {s: comp_status(rows, s) for s in ("make_z", "make_a", "make_b")} == {
        "make_z": "done",
        "make_a": "done",
        "make_b": "done",
    }
    assert comp_attempts(exc.run_id, store, "make_a") == [
        (1, "failed"),
        (2, "failed"),
        (3, "failed"),
        (4, "completed"),
    ]
    assert run_row(exc.run_id, store)["status"] == "rolled_back"

    # A rolled-back run cannot be rolled back twice.
    with pytest.raises(RunEnded, match="already rolled back"):
        airun_nb.rollback(exc.run_id, db=store, namespace=ns)


MYMOD = '''
"""Importable compensation for the CLI test: fails while a BROKEN file sits beside the module."""
import pathlib

HERE = pathlib.Path(__file__).parent


def undo(path):
    if (HERE / "BROKEN").exists():
        raise OSError("backup volume not mounted")
    p = pathlib.Path(path)
    with open(HERE / "undo.log", "a") as f:
        f.write(p.name + "\\n")
    p.unlink()
'''


def cli(*args: str, cwd: Path, pythonpath: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRUN_")}
    env["AIRUN_CALL_MODULES"] = "mymod"  # the owner lets compensations call it
    env["PYTHONPATH"] = os.pathsep.join(
        [str(pythonpath), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    return subprocess.run(
        [sys.executable, "-c", "from airun_nb.cli.main import main; main()", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_rollback_finishes_a_rollback_failed_run(
    store: Path, saga: Saga, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    moddir = tmp_path / "pkg"
    moddir.mkdir()
    (moddir / "mymod.py").write_text(MYMOD)
    (moddir / "BROKEN").write_text("")
    monkeypatch.syspath_prepend(str(moddir))
    monkeypatch.delitem(sys.modules, "mymod", raising=False)
    try:
        # Steps call notebook functions (not importable); only the compensations are.
        undo = '    compensate: {call: "mymod:undo", with: {path: "{{ steps.%s.output.path }}"}}'
        wf = workflow(
            "cli_undo",
            "  - id: make_a\n    call: create\n    with: {name: A.txt}\n" + undo % "make_a",
            "  - id: make_b\n    needs: [make_a]\n    call: create\n    with: {name: B.txt}\n"
            + undo % "make_b",
            "  - id: fail\n    needs: [make_b]\n    call: boom",
        )
        exc = run_failing(wf, namespace=saga.ns(boom=boom))
    finally:
        sys.modules.pop("mymod", None)
    assert exc.status == "rollback_failed"
    assert "airun rollback" in str(exc)
    assert saga.files() == ["A.txt", "B.txt"]

    still_broken = cli("rollback", exc.run_id, "--db", str(store), cwd=tmp_path, pythonpath=moddir)
    assert still_broken.returncode == 1, still_broken
    assert "backup volume not mounted" in still_broken.stderr
    assert "Traceback" not in still_broken.stderr
    assert saga.files() == ["A.txt", "B.txt"]
    assert run_row(exc.run_id, store)["status"] == "rollback_failed"

    (moddir / "BROKEN").unlink()
    fixed = cli("rollback", exc.run_id, "--db", str(store), cwd=tmp_path, pythonpath=moddir)
    assert fixed.returncode == 0, fixed
    assert "rolled_back" in fixed.stdout
    assert saga.files() == []
    assert (moddir / "undo.log").read_text().split() == ["B.txt", "A.txt"]
    assert run_row(exc.run_id, store)["status"] == "rolled_back"
    # make_b failed 3 + 3 times, then succeeded once; make_a only ran in the last rollback.
    assert comp_attempts(exc.run_id, store, "make_b") == [
        *((i, "failed") for i in range(1, 7)),
        (7, "completed"),
    ]
    assert comp_attempts(exc.run_id, store, "make_a") == [(1, "completed")]


# -- (e) parallel branches -------------------------------------------------------------------------


def test_parallel_branches_are_undone_in_reverse_finish_order(store: Path, saga: Saga) -> None:
    """Three independent branches finish fast, mid, slow (each waits for the previous one);
    they are declared slow, mid, fast, so reverse finish order differs from reverse file order."""
    recorded = _Recorded("completed", "fast", "mid", "slow")
    returned: list[str] = []

    def branch(name: str, after: str | None) -> dict[str, str]:
        if after is not None:  # the engine has recorded the previous branch as finished
            assert recorded.seen[after].wait(60), f"{after} never recorded as finished"
        out = saga.create(f"{name}.txt")
        returned.append(name)
        return out

    undo = '    compensate: {call: delete, with: {path: "{{ steps.%s.output.path }}"}}'
    wf = workflow(
        "fan_out",
        "  - id: slow\n    call: branch\n    with: {name: slow, after: mid}\n" + undo % "slow",
        "  - id: mid\n    call: branch\n    with: {name: mid, after: fast}\n" + undo % "mid",
        "  - id: fast\n    call: branch\n    with: {name: fast, after: null}\n" + undo % "fast",
        "  - id: merge\n    needs: [slow, mid, fast]\n    call: boom",
    )
    exc = run_failing(wf, namespace=saga.ns(boom=boom, branch=branch), listener=recorded)

    rows = step_rows(exc.run_id, store)
    by_seq = sorted(("slow", "mid", "fast"), key=lambda s: int(rows[s]["finish_seq"]))
    assert by_seq == returned, "finish_seq must follow the order the branches returned"
    assert by_seq == ["fast", "mid", "slow"]
    assert saga.undone == [f"{s}.txt" for s in reversed(by_seq)]
    assert saga.files() == []
    assert exc.status == "rolled_back"


def test_branch_finishing_after_a_sibling_failed_is_still_undone(store: Path, saga: Saga) -> None:
    """A step still in flight when a sibling fails completes, and so must be compensated."""
    recorded = _Recorded("failed", "quick")

    def slow_writer() -> dict[str, str]:
        assert recorded.seen["quick"].wait(60), "the sibling's failure was never recorded"
        return saga.create("late.txt")

    def fail_fast() -> None:
        raise RuntimeError("quota exceeded")

    wf = workflow(
        "late_branch",
        "  - id: slow\n    call: slow_writer\n"
        '    compensate: {call: delete, with: {path: "{{ steps.slow.output.path }}"}}',
        "  - id: quick\n    call: fail_fast",
        file_step("after", "after.txt", needs=["slow", "quick"]),
    )
    exc = run_failing(
        wf, namespace=saga.ns(slow_writer=slow_writer, fail_fast=fail_fast), listener=recorded
    )
    assert exc.status == "rolled_back"
    assert saga.undone == ["late.txt"]
    assert saga.files() == []
    rows = step_rows(exc.run_id, store)
    assert never_started(rows, "after")
    assert saga.calls["do:after.txt"] == 0


# -- skipped, never started, compensate_on_failure --------------------------------------------------


def test_skipped_and_never_started_steps_are_not_compensated(store: Path, saga: Saga) -> None:
    wf = workflow(
        "skips",
        file_step("make_a", "A.txt"),
        file_step("optional", "opt.txt", needs=["make_a"], when="params.full"),
        "  - id: fail\n    needs: [make_a]\n    call: boom",
        file_step("later", "later.txt", needs=["fail"]),
        head="params: {full: false}\n",
    )
    exc = run_failing(wf, namespace=saga.ns(boom=boom))
    rows = step_rows(exc.run_id, store)
    assert rows["optional"]["status"] == "skipped"
    assert never_started(rows, "later")
    assert comp_status(rows, "optional") is None
    assert comp_status(rows, "make_a") == "done"
    assert saga.undone == ["A.txt"]
    assert saga.calls["undo:opt.txt"] == saga.calls["undo:later.txt"] == 0


def test_failed_step_with_compensate_on_failure_is_undone_first(store: Path, saga: Saga) -> None:
    def half_upload(name: str) -> None:
        (saga.dir / name).write_text("partial")  # leaves a partial file behind, then fails
        raise TimeoutError("upload interrupted")

    wf = workflow(
        "partial",
        file_step("make_a", "A.txt"),
        file_step("make_b", "B.txt", needs=["make_a"]),
        "  - id: upload\n    needs: [make_b]\n    call: half_upload\n"
        "    with: {name: '{{ params.part }}'}\n"
        "    compensate_on_failure: true\n"
        "    compensate: {call: delete, with: {path: '{{ params.dir }}/{{ params.part }}'}}",
        head=f"params: {{part: upload.part, dir: '{saga.dir}'}}\n",
    )
    exc = run_failing(wf, namespace=saga.ns(half_upload=half_upload))
    assert exc.status == "rolled_back"
    assert saga.undone == ["upload.part", "B.txt", "A.txt"]
    assert saga.files() == []
    rows = step_rows(exc.run_id, store)
    assert rows["upload"]["status"] == "failed"
    assert comp_status(rows, "upload") == "done"


def test_without_compensate_on_failure_a_failed_step_is_not_undone(store: Path, saga: Saga) -> None:
    def half_upload() -> None:
        (saga.dir / "upload.part").write_text("partial")
        raise TimeoutError("upload interrupted")

    wf = workflow(
        "partial_kept",
        file_step("make_a", "A.txt"),
        "  - id: upload\n    needs: [make_a]\n    call: half_upload\n"
        f"    compensate: {{call: delete, with: {{path: '{saga.dir}/upload.part'}}}}",
    )
    exc = run_failing(wf, namespace=saga.ns(half_upload=half_upload))
    assert exc.status == "rolled_back"
    assert saga.undone == ["A.txt"]
    assert saga.files() == ["upload.part"]


# -- (f) on_failure: stop ---------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["workflow", "step"])
def test_on_failure_stop_leaves_run_failed_and_resumable(
    store: Path, saga: Saga, where: str
) -> None:
    def charge() -> dict[str, Any]:
        raise ConnectionError("payment gateway down")

    head = "on_failure: stop\n" if where == "workflow" else ""
    extra = {} if where == "workflow" else {"on_failure": "stop"}
    text_steps = [
        file_step("make_a", "A.txt"),
        file_step("make_b", "B.txt", needs=["make_a"]),
        "  - id: charge\n    needs: [make_b]\n    call: charge"
        + "".join(f"\n    {k}: {v}" for k, v in extra.items()),
    ]
    ns = saga.ns(charge=charge)
    exc = run_failing(workflow("stopper", *text_steps, head=head), namespace=ns)

    assert exc.status == "failed"
    assert "rolled back" not in str(exc)
    assert saga.files() == ["A.txt", "B.txt"]
    assert saga.undone == []
    rows = step_rows(exc.run_id, store)
    assert all(comp_status(rows, s) is None for s in rows)
    assert run_row(exc.run_id, store)["status"] == "failed"
    kinds = Counter(k for k, _ in event_kinds(exc.run_id, store))
    assert kinds["run_rolling_back"] == 0 and kinds["run_failed"] == 1

    # Fix the function and re-run: the run resumes, finished steps are not executed again.
    def charge_fixed() -> dict[str, Any]:
        return {"ok": True}

    ns["charge"] = charge_fixed
    result = workflow("stopper", *text_steps, head=head).run(namespace=ns)
    assert result.run_id == exc.run_id
    assert result.status == "completed"
    assert result.plan is not None and result.plan.mode == "resume"
    assert sorted(result.replayed) == ["make_a", "make_b"]
    assert result.executed == ["charge"]
    assert saga.calls == Counter({"do:A.txt": 1, "do:B.txt": 1})
    assert saga.files() == ["A.txt", "B.txt"]


def test_step_on_failure_rollback_overrides_workflow_stop(store: Path, saga: Saga) -> None:
    wf = workflow(
        "override",
        file_step("make_a", "A.txt"),
        "  - id: fail\n    needs: [make_a]\n    call: boom\n    on_failure: rollback",
        head="on_failure: stop\n",
    )
    exc = run_failing(wf, namespace=saga.ns(boom=boom))
    assert exc.status == "rolled_back"
    assert saga.files() == []


def test_stopped_run_can_be_rolled_back_on_demand(store: Path, saga: Saga) -> None:
    wf = workflow(
        "stop_then_undo",
        file_step("make_a", "A.txt"),
        file_step("make_b", "B.txt", needs=["make_a"]),
        "  - id: fail\n    needs: [make_b]\n    call: boom",
        head="on_failure: stop\n",
    )
    exc = run_failing(wf, namespace=saga.ns(boom=boom))
    assert exc.status == "failed"
    result = airun_nb.rollback(exc.run_id, db=store, namespace=saga.ns())
    assert result.status == "rolled_back"
    assert saga.undone == ["B.txt", "A.txt"]
    row = run_row(exc.run_id, store)
    assert row["status"] == "rolled_back" and row["failed_step"] == "fail"


def test_resume_of_a_rolled_back_run_is_refused(store: Path, saga: Saga) -> None:
    """Its finished steps were undone: replaying them as 'completed' would report a run as done
    whose effects no longer exist."""
    state = {"fail": True}

    def charge() -> dict[str, bool]:
        if state["fail"]:
            raise ConnectionError("payment gateway down")
        return {"ok": True}

    ns = saga.ns(charge=charge)
    text = [file_step("make_a", "A.txt"), "  - id: charge\n    needs: [make_a]\n    call: charge"]
    exc = run_failing(workflow("no_zombies", *text), namespace=ns)
    assert exc.status == "rolled_back" and saga.files() == []

    state["fail"] = False
    outcome: Any
    try:
        outcome = workflow("no_zombies", *text).run(namespace=ns, resume=exc.run_id)
    except AirunError as err:
        outcome = err
    assert run_row(exc.run_id, store)["status"] == "rolled_back", (
        f"resume={exc.run_id} turned a rolled-back run into "
        f"{run_row(exc.run_id, store)['status']!r} while its files are gone "
        f"(files: {saga.files()}); outcome: {outcome!r}"
    )
    assert isinstance(outcome, AirunError)


# -- (g) check: and error values -------------------------------------------------------------------


def test_check_failing_on_an_error_value_triggers_rollback(store: Path, saga: Saga) -> None:
    answers: list[dict[str, Any]] = []

    def charge() -> dict[str, Any]:
        answers.append({"ok": False, "error": "card declined"})
        return answers[-1]

    wf = workflow(
        "checked",
        file_step("make_a", "A.txt"),
        "  - id: charge\n    needs: [make_a]\n    call: charge\n    check: result.ok\n"
        "    retry: {attempts: 2, initial: 0.01}",
    )
    exc = run_failing(wf, namespace=saga.ns(charge=charge))
    assert len(answers) == 2, "the check is evaluated on every attempt"
    assert exc.status == "rolled_back"
    assert saga.files() == []
    rows = step_rows(exc.run_id, store)
    assert rows["charge"]["status"] == "failed"
    assert "check failed" in str(rows["charge"]["error"]) and "result.ok" in str(
        rows["charge"]["error"]
    )
    assert "card declined" in str(exc)


def test_check_passing_completes(store: Path, saga: Saga) -> None:
    wf = workflow(
        "checked_ok",
        file_step("make_a", "A.txt", check="result.name == 'A.txt'"),
    )
    result = wf.run(namespace=saga.ns())
    assert result.status == "completed" and saga.files() == ["A.txt"]


def test_step_returning_an_exception_fails_and_rolls_back(store: Path, saga: Saga) -> None:
    def validate() -> Exception:
        return ValueError("3 rows have no customer id")

    wf = workflow(
        "error_value",
        file_step("make_a", "A.txt"),
        "  - id: validate\n    needs: [make_a]\n    call: validate",
    )
    exc = run_failing(wf, namespace=saga.ns(validate=validate))
    assert exc.status == "rolled_back"
    assert saga.files() == []
    rows = step_rows(exc.run_id, store)
    assert rows["validate"]["status"] == "failed"
    assert "ValueError" in str(rows["validate"]["error"])
    assert "no customer id" in str(rows["validate"]["error"])


# -- other compensation kinds ----------------------------------------------------------------------


def test_python_compensation_reads_the_stored_output(store: Path, saga: Saga) -> None:
    wf = workflow(
        "py_undo",
        "  - id: make_a\n    call: create\n    with: {name: A.txt}\n"
        "    compensate:\n      python: |\n        import pathlib\n"
        "        pathlib.Path(steps.make_a.output['path']).unlink()\n"
        "        undone.append('A by python')",
        "  - id: fail\n    needs: [make_a]\n    call: boom",
    )
    undone: list[str] = []
    exc = run_failing(wf, namespace=saga.ns(boom=boom, undone=undone))
    assert exc.status == "rolled_back"
    assert undone == ["A by python"]
    assert saga.files() == []


# -- on-demand rollback ----------------------------------------------------------------------------


def test_rollback_of_a_completed_run_via_python(store: Path, saga: Saga) -> None:
    wf = workflow(
        "undo_me",
        file_step("make_a", "A.txt"),
        file_step("make_b", "B.txt", needs=["make_a"]),
        "  - id: tally\n    needs: [make_b]\n    python: |\n      result = 2",
    )
    done = wf.run(namespace=saga.ns())
    assert done.status == "completed" and saga.files() == ["A.txt", "B.txt"]

    result = airun_nb.rollback(done.run_id, db=store, namespace=saga.ns())
    assert result.status == "rolled_back"
    assert saga.undone == ["B.txt", "A.txt"]
    rows = step_rows(done.run_id, store)
    assert comp_status(rows, "tally") == "none"
    assert run_row(done.run_id, store)["status"] == "rolled_back"
    kinds = Counter(k for k, _ in event_kinds(done.run_id, store))
    assert kinds["run_completed"] == 1
    assert kinds["run_rolling_back"] == 1 and kinds["run_rolled_back"] == 1
    assert kinds["compensation_done"] == 2


def test_steps_reused_from_another_run_are_not_undone_by_this_one(store: Path, saga: Saga) -> None:
    """A new run that reuses an unchanged step's output from a finished run did not do that
    step's side effect: its rollback leaves it to the run that did."""
    state = {"fail": False}

    def maybe(n: int) -> int:
        if state["fail"]:
            raise RuntimeError("now failing")
        return n

    def text(n: int) -> list[str]:
        return [
            file_step("make_a", "A.txt"),
            f"  - id: tail\n    needs: [make_a]\n    call: maybe\n    with: {{n: {n}}}",
        ]

    ns = saga.ns(maybe=maybe)
    first = workflow("reuse", *text(1)).run(namespace=ns)
    assert first.status == "completed"
    state["fail"] = True
    exc = run_failing(workflow("reuse", *text(2)), namespace=ns)
    assert exc.run_id != first.run_id
    rows = step_rows(exc.run_id, store)
    assert rows["make_a"]["replayed_from"] == first.run_id
    assert comp_status(rows, "make_a") is None
    assert saga.files() == ["A.txt"]
    assert saga.calls["do:A.txt"] == 1 and saga.calls["undo:A.txt"] == 0


# -- RunBusy: a run executing in another live process ---------------------------------------------

BUSY_SCRIPT = r'''
import os, pathlib, sys, time
import airun_nb

root = pathlib.Path(sys.argv[1])
mode = sys.argv[2]

def create(name):
    p = root / name
    p.write_text("x")
    return {"path": str(p)}

def wait_for_go(tag):
    (root / f"{tag}.waiting").write_text(str(os.getpid()))
    while not (root / "go").exists():
        time.sleep(0.02)

def slow_step():
    wait_for_go("step")
    return 1

def fail():
    raise RuntimeError("disk full")

def slow_delete(path):
    wait_for_go("undo")
    pathlib.Path(path).unlink()

tail = "    call: slow_step" if mode == "step" else "    call: fail"
text = f"""
name: busy
steps:
  - id: make_a
    call: create
    with: {{name: A.txt}}
    compensate: {{call: slow_delete, with: {{path: "{{{{ steps.make_a.output.path }}}}"}}}}
  - id: tail
    needs: [make_a]
{tail}
"""
result = airun_nb.Workflow.from_yaml(text).run(
    namespace=dict(create=create, slow_step=slow_step, fail=fail, slow_delete=slow_delete),
    raise_on_failure=False,
)
print("FINAL", result.run_id, result.status)
'''

BUSY_YAML_FOR_RERUN = """
name: busy
steps:
  - id: make_a
    call: create
    with: {name: A.txt}
    compensate: {call: slow_delete, with: {path: "{{ steps.make_a.output.path }}"}}
  - id: tail
    needs: [make_a]
    call: fail
"""


@pytest.fixture
def busy_proc(tmp_path: Path, store: Path) -> Iterator[Callable[[str], subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    script = tmp_path / "busy.py"
    script.write_text(BUSY_SCRIPT)

    def start(mode: str) -> subprocess.Popen[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRUN_")}
        env["AIRUN_DB"] = str(store)
        p = subprocess.Popen(
            [sys.executable, str(script), str(tmp_path), mode],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(p)
        return p

    yield start
    (tmp_path / "go").write_text("")
    for p in procs:
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _latest(store: Path) -> dict[str, Any]:
    df = airun_nb.runs(db=store)
    return df.iloc[-1].to_dict() if len(df) else {}


def test_rollback_refused_while_run_executes_elsewhere(
    store: Path, tmp_path: Path, busy_proc: Callable[[str], subprocess.Popen[str]]
) -> None:
    proc = busy_proc("step")
    wait_until(lambda: (tmp_path / "step.waiting").exists() or proc.poll() is not None, "step")
    assert proc.poll() is None, proc.communicate()
    run_id = _latest(store)["run_id"]
    assert _latest(store)["status"] == "running"

    with pytest.raises(RunBusy) as info:
        airun_nb.rollback(run_id, db=store)
    assert str(proc.pid) in str(info.value)
    assert (tmp_path / "A.txt").exists()

    (tmp_path / "go").write_text("")
    out, err = proc.communicate(timeout=60)
    assert f"FINAL {run_id} completed" in out, (out, err)

    # Finished there: now it can be undone here (with a quick compensation of our own).
    result = airun_nb.rollback(run_id, db=store, namespace={"slow_delete": _unlink})
    assert result.status == "rolled_back"
    assert not (tmp_path / "A.txt").exists()


def _unlink(path: str) -> None:
    Path(path).unlink()


def test_rollback_and_rerun_refused_while_rolling_back_elsewhere(
    store: Path, tmp_path: Path, busy_proc: Callable[[str], subprocess.Popen[str]]
) -> None:
    proc = busy_proc("fail")
    wait_until(lambda: (tmp_path / "undo.waiting").exists() or proc.poll() is not None, "undo")
    assert proc.poll() is None, proc.communicate()
    run_id = _latest(store)["run_id"]
    assert _latest(store)["status"] == "rolling_back"

    with pytest.raises(RunBusy):
        airun_nb.rollback(run_id, db=store, namespace={"slow_delete": _unlink})
    ns = {"create": lambda name: {"path": name}, "fail": boom, "slow_delete": _unlink}
    with pytest.raises(RunBusy):
        Workflow.from_yaml(BUSY_YAML_FOR_RERUN).run(db=store, namespace=ns)
    assert (tmp_path / "A.txt").exists(), "nobody but the owner may run its compensations"

    (tmp_path / "go").write_text("")
    out, err = proc.communicate(timeout=60)
    assert f"FINAL {run_id} rolled_back" in out, (out, err)
    assert not (tmp_path / "A.txt").exists()
    steps = step_rows(run_id, store)
    assert int(steps["make_a"]["comp_attempts"]) == 1


# -- the notebook front end: %workflow rollback in a real IPython shell -----------------------------


@pytest.fixture
def shell(store: Path) -> Iterator[Any]:
    from IPython.testing import globalipapp

    # The shell is process-wide: start_ipython() returns it the first time, None after that.
    sh = globalipapp.start_ipython() or globalipapp.get_ipython()
    sh.reset(new_session=False)
    sh.run_line_magic("load_ext", "airun_nb")
    yield sh
    sh.reset(new_session=False)


def cell(sh: Any, source: str) -> Any:
    return sh.run_cell(source, store_history=False)


def nb_workflow(saga: Saga, tail: str = "") -> str:
    return (
        "%%workflow nb_saga\nsteps:\n"
        + file_step("make_a", "A.txt")
        + "\n"
        + file_step("make_b", "B.txt", needs=["make_a"])
        + ("\n" + tail if tail else "")
        + "\n"
    )


def test_magic_rollback_of_a_completed_run(shell: Any, store: Path, saga: Saga) -> None:
    shell.user_ns.update(saga.ns())
    res = cell(shell, nb_workflow(saga))
    assert res.error_in_exec is None, res.error_in_exec
    first = airun_nb.last_run()
    assert first is not None and first.status == "completed"
    assert saga.files() == ["A.txt", "B.txt"]

    res = cell(shell, f"%workflow rollback {first.run_id}")
    assert res.error_in_exec is None, res.error_in_exec
    assert saga.files() == []
    assert saga.undone == ["B.txt", "A.txt"]
    assert run_row(first.run_id, store)["status"] == "rolled_back"

    # Running the cell again after an undo starts a new run (the old one stays rolled back).
    res = cell(shell, nb_workflow(saga))
    assert res.error_in_exec is None, res.error_in_exec
    second = airun_nb.last_run()
    assert second is not None and second.run_id != first.run_id
    assert second.status == "completed"
    assert saga.files() == ["A.txt", "B.txt"]
    assert saga.calls["do:A.txt"] == 2

    res = cell(shell, f"%workflow rollback {first.run_id}")
    assert isinstance(res.error_in_exec, RunEnded)
    assert saga.files() == ["A.txt", "B.txt"]


def test_magic_rollback_failed_refuses_rerun_then_finishes(
    shell: Any, store: Path, saga: Saga, capsys: pytest.CaptureFixture[str]
) -> None:
    shell.user_ns.update(saga.ns(boom=boom))
    cell(
        shell,
        "def remove_c(path):\n    raise PermissionError('locked by another user')\n",
    )
    tail = (
        "  - id: make_c\n    needs: [make_b]\n    call: create\n    with: {name: C.txt}\n"
        '    compensate: {call: remove_c, with: {path: "{{ steps.make_c.output.path }}"}}\n'
        "  - id: fail\n    needs: [make_c]\n    call: boom"
    )
    res = cell(shell, nb_workflow(saga, tail))
    assert isinstance(res.error_in_exec, WorkflowFailed)
    run_id = res.error_in_exec.run_id
    assert res.error_in_exec.status == "rollback_failed"
    out = capsys.readouterr().out
    assert "rollback failed" in out and f"%workflow rollback {run_id}" in out
    assert "Traceback" not in out
    assert saga.files() == ["A.txt", "B.txt", "C.txt"]

    res = cell(shell, nb_workflow(saga, tail))
    assert isinstance(res.error_in_exec, RunBusy)
    assert f"%workflow rollback {run_id}" in str(res.error_in_exec)
    assert saga.calls["do:A.txt"] == 1

    cell(shell, "def remove_c(path):\n    import os; os.remove(path)\n")
    res = cell(shell, f"%workflow rollback {run_id}")
    assert res.error_in_exec is None, res.error_in_exec
    assert saga.files() == []
    assert saga.undone == ["B.txt", "A.txt"]  # C was removed by the fixed remove_c
    rows = step_rows(run_id, store)
    assert [comp_status(rows, s) for s in ("make_a", "make_b", "make_c", "fail")] == [
        "done",
        "done",
        "done",
        None,
    ]
    assert run_row(run_id, store)["status"] == "rolled_back"


def test_magic_rollback_does_not_announce_a_new_run(
    shell: Any, store: Path, saga: Saga, capsys: pytest.CaptureFixture[str]
) -> None:
    """What `%workflow rollback RUN` prints must describe a rollback of RUN."""
    shell.user_ns.update(saga.ns())
    res = cell(shell, nb_workflow(saga))
    assert res.error_in_exec is None
    run_id = airun_nb.last_run().run_id  # type: ignore[union-attr]
    capsys.readouterr()
    res = cell(shell, f"%workflow rollback {run_id}")
    assert res.error_in_exec is None
    out = capsys.readouterr().out
    assert "rolled_back" in out
    assert "new run" not in out and "of None" not in out, out


def test_workflow_yaml_rejects_a_compensation_without_a_body() -> None:
    with pytest.raises(airun_nb.SpecError, match="compensate"):
        Workflow.from_yaml(
            textwrap.dedent(
                """
                name: bad
                steps:
                  - id: a
                    python: "result = 1"
                    compensate: {with: {x: 1}}
                """
            )
        )
