"""Time travel: code fingerprints seen in why(), cache controls, dry runs, forks, diffs and
replay as a test, through a real IPython shell and real DuckDB stores.

Every step body appends its name to ``ledger.txt`` (a file outside the store), so the tests
count how often each body really ran, whatever the store says.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import airun_nb
from airun_nb import SpecError
from airun_nb.testing import assert_replays, replay
from support import AIRUN

SETUP = """
import pathlib
import pandas as pd

LEDGER = pathlib.Path({ledger!r})
THRESHOLD = 0.5

def tick(step):
    with open(LEDGER, "a") as f:
        f.write(step + "\\n")

def normalize(x):
    return x * 2

def load_sales(n):
    tick("load")
    return pd.DataFrame({{"region": ["n", "s"] * n, "amount": [float(i) for i in range(2 * n)]}})

def clean(df):
    tick("clean")
    return df.assign(amount=[normalize(a) for a in df["amount"]])

def flag(df):
    tick("flag")
    return df.assign(big=df["amount"] > THRESHOLD * 10)

def other():
    tick("other")
    return {{"answer": 42}}
"""

CELL = """%%workflow sales {args}
params: {{n: 3}}
steps:
  - id: load
    call: load_sales
    with: {{n: "{{{{ params.n }}}}"}}
  - id: clean
    needs: [load]
    call: clean
    with: {{df: "{{{{ steps.load.output }}}}"}}
  - id: flag
    needs: [clean]
    call: flag
    with: {{df: "{{{{ steps.clean.output }}}}"}}
  - id: other
    call: other
  - id: totals
    needs: [flag]
    sql: select region, sum(amount) as total, count(*) filter (where big) as big from {{{{ steps.flag }}}} group by region order by region
    output: totals
"""


@pytest.fixture
def db(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The store of this test: a DuckDB file, or for the tests marked ``ON_BOTH`` backends
    also a PostgreSQL database (``AIRUN_DB`` names it, so the shell's default store is it)."""
    if getattr(request, "param", "duckdb") == "postgres":
        return request.getfixturevalue("pg_url")
    path = tmp_path / "s.duckdb"
    monkeypatch.setenv("AIRUN_DB", str(path))
    monkeypatch.delenv("AIRUN_LOCK_TIMEOUT", raising=False)
    monkeypatch.delenv("AIRUN_CRASH_AT", raising=False)
    return path


# The representative tests that also run against a PostgreSQL team store.
ON_BOTH = pytest.mark.parametrize("db", ["duckdb", "postgres"], indirect=True)


@pytest.fixture
def shell(ipython, tmp_path: Path):
    ledger = tmp_path / "ledger.txt"
    assert ipython.run_cell(SETUP.format(ledger=str(ledger))).success
    ipython.ledger = ledger
    return ipython


def counts(shell) -> dict[str, int]:
    path: Path = shell.ledger
    lines = path.read_text().split() if path.exists() else []
    return {s: lines.count(s) for s in sorted(set(lines))}


def run_cell(shell, args: str = "", cell: str = CELL) -> airun_nb.RunResult:
    result = shell.run_cell(cell.format(args=args))
    result.raise_error()
    last = airun_nb.last_run()
    assert last is not None
    return last


def why_rows(run_id: str) -> dict[str, dict]:
    df = airun_nb.why(run_id)
    return {r["step"]: r for r in df.to_dict("records")}


# --------------------------------------------------------------------------- fingerprints
def test_changed_helper_reruns_exactly_the_steps_that_depend_on_it(shell) -> None:
    first = run_cell(shell)
    assert counts(shell) == {"clean": 1, "flag": 1, "load": 1, "other": 1}
    assert shell.run_cell("def normalize(x):\n    return x * 3").success
    second = run_cell(shell)
    assert counts(shell) == {"clean": 2, "flag": 2, "load": 1, "other": 1}
    rows = why_rows(second.run_id)
    assert rows["load"]["decision"] == "replayed" and rows["other"]["decision"] == "replayed"
    assert rows["clean"]["decision"] == "ran"
    assert rows["clean"]["changed"] == ["helper normalize"]
    assert rows["clean"]["reason"] == "helper normalize changed"
    assert rows["flag"]["changed"] == ["upstream clean"]
    assert rows["totals"]["changed"] == ["upstream flag"]
    assert rows["load"]["replayed_from"] == first.run_id


def test_changed_global_constant_is_named_with_both_values(shell) -> None:
    run_cell(shell)
    assert shell.run_cell("THRESHOLD = 0.7").success
    second = run_cell(shell)
    rows = why_rows(second.run_id)
    assert rows["flag"]["changed"] == ["global THRESHOLD 0.5 → 0.7"]
    assert rows["clean"]["decision"] == "replayed"
    assert counts(shell)["flag"] == 2 and counts(shell)["clean"] == 1


def test_changed_closure_value_is_seen(shell) -> None:
    code = """
def make_scaler(k):
    def scale():
        tick("scale")
        return k * 10
    return scale
scale = make_scaler({k})
"""
    cell = """%%workflow closures
steps:
  - id: scale
    call: scale
  - id: after
    needs: [scale]
    python: |
      result = steps.scale.output + 1
"""
    assert shell.run_cell(code.format(k=2)).success
    run_cell(shell, cell=cell)
    assert shell.run_cell(code.format(k=5)).success
    second = run_cell(shell, cell=cell)
    rows = why_rows(second.run_id)
    assert rows["scale"]["changed"] == ["closure k 2 → 5"]
    assert second.outputs["after"] == 51
    assert counts(shell)["scale"] == 2


def test_comments_and_docstrings_do_not_count(shell) -> None:
    run_cell(shell)
    assert shell.run_cell(
        'def normalize(x):\n    """Doubles."""\n    # twice as much\n    return x * 2'
    ).success
    second = run_cell(shell)
    assert second.plan is not None and second.plan.mode == "new"  # nothing changed
    assert airun_nb.why(second.run_id)["changed"].map(len).sum() == 0


def test_library_version_bump_is_named(shell, tmp_path: Path) -> None:
    site = tmp_path / "site"
    pkg = site / "stubcalc"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("def triple(x):\n    return 3 * x\n")
    dist = site / "stubcalc-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: stubcalc\nVersion: 1.0\n")
    sys.path.insert(0, str(site))
    try:
        assert shell.run_cell(
            "import stubcalc\ndef calc():\n    tick('calc')\n    return stubcalc.triple(2)"
        ).success
        cell = "%%workflow lib\nsteps:\n  - id: calc\n    call: calc\n  - id: keep\n    python: 'result = 1'\n"
        run_cell(shell, cell=cell)
        # the package is upgraded in place: same code, new version
        (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: stubcalc\nVersion: 2.0\n")
        dist.rename(site / "stubcalc-2.0.dist-info")
        second = run_cell(shell, cell=cell)
        rows = why_rows(second.run_id)
        assert rows["calc"]["changed"] == ["stubcalc 1.0 → 2.0"]
        assert rows["calc"]["decision"] == "ran" and rows["keep"]["decision"] == "replayed"
        assert counts(shell)["calc"] == 2
    finally:
        sys.path.remove(str(site))
        sys.modules.pop("stubcalc", None)


def test_unhashable_global_is_named_not_tracked(shell) -> None:
    assert shell.run_cell(
        "import threading\nLOCK = threading.Lock()\n"
        "def guarded():\n    with LOCK:\n        return 1"
    ).success
    cell = "%%workflow locked\nsteps:\n  - id: g\n    call: guarded\n  - id: h\n    python: 'result = 2'\n"
    run_cell(shell, cell=cell)
    assert shell.run_cell("def guarded():\n    with LOCK:\n        return 2").success
    second = run_cell(shell, cell=cell)
    assert "LOCK not tracked" in why_rows(second.run_id)["g"]["reason"]


def test_inline_python_step_tracks_the_notebook_names_it_reads(shell) -> None:
    cell = """%%workflow inline
steps:
  - id: base
    python: |
      result = THRESHOLD * 100
  - id: fixed
    python: |
      result = 7
"""
    run_cell(shell, cell=cell)
    assert shell.run_cell("THRESHOLD = 0.9").success
    second = run_cell(shell, cell=cell)
    rows = why_rows(second.run_id)
    assert rows["base"]["changed"] == ["global THRESHOLD 0.5 → 0.9"]
    assert rows["fixed"]["decision"] == "replayed"
    assert second.outputs["base"] == 90.0


# --------------------------------------------------------------------------- cache controls
CACHE_CELL = """%%workflow cached
steps:
  - id: load
    call: load_sales
    with: {{n: 2}}
    cache: {load_cache}
  - id: other
    call: other
    cache: {other_cache}
  - id: edit
    python: |
      result = {edit}
"""


def test_cache_recompute_always_runs_in_a_reusing_run(shell) -> None:
    cell = CACHE_CELL.format(load_cache="recompute", other_cache="null", edit=1)
    run_cell(shell, cell=cell.replace("{", "{{").replace("}", "}}"))
    edited = CACHE_CELL.format(load_cache="recompute", other_cache="null", edit=2)
    second = run_cell(shell, cell=edited.replace("{", "{{").replace("}", "}}"))
    rows = why_rows(second.run_id)
    assert rows["load"]["decision"] == "ran" and rows["load"]["reason"] == "cache: recompute"
    assert rows["other"]["decision"] == "replayed"
    assert counts(shell) == {"load": 2, "other": 1}


def test_cache_version_is_a_manual_key(shell) -> None:
    def cell(version: str, edit: int) -> str:
        text = CACHE_CELL.format(
            load_cache=f'{{version: "{version}"}}', other_cache="null", edit=edit
        )
        return text.replace("{", "{{").replace("}", "}}")

    run_cell(shell, cell=cell("1", 1))
    assert shell.run_cell(
        "_orig = load_sales\ndef load_sales(n):\n    return _orig(n).assign(v=1)"
    ).success
    second = run_cell(shell, cell=cell("1", 2))  # code changed, same version: reused
    assert why_rows(second.run_id)["load"]["decision"] == "replayed"
    third = run_cell(shell, cell=cell("2", 3))
    rows = why_rows(third.run_id)
    assert rows["load"]["decision"] == "ran"
    assert rows["load"]["changed"] == ["cache version 1 → 2"]
    assert "v" in third.outputs["load"].columns


def test_cache_ignore_reuses_whatever_is_stored(shell) -> None:
    cell = CACHE_CELL.format(load_cache="ignore", other_cache="null", edit=1)
    run_cell(shell, cell=cell.replace("{", "{{").replace("}", "}}"))
    assert shell.run_cell("def load_sales(n):\n    raise RuntimeError('would fail')").success
    edited = CACHE_CELL.format(load_cache="ignore", other_cache="null", edit=2)
    second = run_cell(shell, cell=edited.replace("{", "{{").replace("}", "}}"))
    rows = why_rows(second.run_id)
    assert rows["load"]["decision"] == "replayed" and rows["load"]["reason"] == "cache: ignore"
    assert len(second.outputs["load"]) == 4


def test_bad_cache_value_is_one_line_with_its_place() -> None:
    with pytest.raises(SpecError) as info:
        airun_nb.Workflow.from_yaml(
            "name: w\nsteps:\n  - id: a\n    python: 'result = 1'\n    cache: sometimes\n"
        )
    assert "line 5" in str(info.value) and "'cache' must be recompute, ignore" in str(info.value)


# --------------------------------------------------------------------------- dry run
def test_dry_run_prints_the_plan_and_writes_nothing(shell, capsys, db: Path) -> None:
    run_cell(shell)
    assert shell.run_cell("def normalize(x):\n    return x * 5").success
    before = (len(airun_nb.runs()), len(airun_nb.steps()), len(airun_nb.events()))
    ledger_before = counts(shell)
    capsys.readouterr()
    assert shell.run_cell(CELL.format(args="--dry-run")).success
    out = capsys.readouterr().out
    assert "dry run: nothing was executed or written" in out
    assert "clean" in out and "helper normalize changed" in out
    assert "replay  unchanged" in out  # load
    assert (len(airun_nb.runs()), len(airun_nb.steps()), len(airun_nb.events())) == before
    assert counts(shell) == ledger_before


# --------------------------------------------------------------------------- fork
CHAIN = """%%workflow chain {args}
params: {{base: 1}}
steps:
  - id: a
    python: |
      tick("a")
      result = params["base"]
  - id: b
    needs: [a]
    python: |
      tick("b")
      result = steps.a.output + 10
  - id: c
    needs: [b]
    python: |
      tick("c")
      result = steps.b.output * 2
  - id: d
    needs: [c]
    python: |
      tick("d")
      result = {{"total": steps.c.output, "base": params["base"]}}
"""


@pytest.mark.parametrize(
    ("step", "ran"),
    [("a", ["a", "b", "c", "d"]), ("c", ["c", "d"]), ("d", ["d"])],
)
def test_fork_runs_the_step_and_downstream_only(shell, step: str, ran: list[str]) -> None:
    first = run_cell(shell, cell=CHAIN)
    assert counts(shell) == {"a": 1, "b": 1, "c": 1, "d": 1}
    forked = airun_nb.fork(first.run_id, step, params={"base": 5}, namespace=shell.user_ns)
    assert forked.status == "completed"
    assert sorted(forked.executed) == ran
    expected = {s: 1 + (s in ran) for s in "abcd"}
    assert counts(shell) == expected  # the upstream bodies did not run again
    rows = why_rows(forked.run_id)
    assert rows[step]["reason"] == "the fork point"
    for s in "abcd":
        assert rows[s]["decision"] == ("ran" if s in ran else "replayed")
    runs = airun_nb.runs().set_index("run_id")
    row = _run_row(forked.run_id)
    assert (row["forked_from"], row["forked_step"]) == (first.run_id, step)
    assert forked.outputs["d"]["base"] == 5
    assert len(runs) == 2


def _run_row(run_id: str) -> dict:
    from airun_nb.store.database import Store

    return Store.open().query_dicts("SELECT * FROM runs WHERE run_id = ?", [run_id])[0]


def test_fork_through_the_cell_magic_uses_the_cells_code(shell) -> None:
    first = run_cell(shell, cell=CHAIN)
    edited = CHAIN.replace("result = steps.b.output * 2", "result = steps.b.output * 3")
    forked = run_cell(shell, args=f"--fork {first.run_id} --from c", cell=edited)
    assert forked.plan is not None and forked.plan.mode == "fork"
    assert sorted(forked.executed) == ["c", "d"]
    assert forked.outputs["d"]["total"] == 33
    assert counts(shell) == {"a": 1, "b": 1, "c": 2, "d": 2}
    why_df = shell.run_line_magic("workflow", f"why {forked.run_id}")
    assert list(why_df["decision"]) == ["replayed", "replayed", "ran", "ran"]


COMP_CELL = """%%workflow comp
on_failure: rollback
steps:
  - id: pure
    python: |
      tick("pure")
      result = 1
  - id: effect
    needs: [pure]
    python: |
      tick("effect")
      result = 2
    compensate:
      python: |
        tick("undo_effect")
  - id: risky
    needs: [effect]
    python: |
      tick("risky")
      if BROKEN:
          raise RuntimeError("risky broke")
      result = 3
    compensate:
      python: |
        tick("undo_risky")
"""


@ON_BOTH
def test_fork_after_a_rollback_reruns_what_was_undone(shell, db: Any) -> None:
    assert shell.run_cell("BROKEN = True").success
    failed = shell.run_cell(COMP_CELL)
    assert not failed.success
    source = airun_nb.last_run()
    assert source is not None and source.status == "rolled_back"
    assert counts(shell) == {"effect": 1, "pure": 1, "risky": 1, "undo_effect": 1}
    assert shell.run_cell("BROKEN = False").success
    forked = airun_nb.fork(source.run_id, "risky", namespace=shell.user_ns)
    assert forked.status == "completed"
    rows = why_rows(forked.run_id)
    assert rows["pure"]["decision"] == "replayed"
    assert rows["effect"]["decision"] == "ran"
    assert rows["effect"]["reason"] == f"undone by the rollback of {source.run_id}"
    assert counts(shell)["pure"] == 1 and counts(shell)["effect"] == 2
    # Undoing the fork undoes only what the fork did.
    airun_nb.rollback(forked.run_id, namespace=shell.user_ns)
    assert counts(shell)["undo_effect"] == 2 and counts(shell)["undo_risky"] == 1
    assert "undo_pure" not in counts(shell)


def test_undoing_a_fork_leaves_the_reused_steps_alone(shell) -> None:
    assert shell.run_cell("BROKEN = False").success
    first = run_cell(shell, cell=COMP_CELL)
    forked = airun_nb.fork(first.run_id, "risky", namespace=shell.user_ns)
    airun_nb.rollback(forked.run_id, namespace=shell.user_ns)
    assert counts(shell).get("undo_risky") == 1
    assert "undo_effect" not in counts(shell)  # effect was reused, not done by the fork


def test_fork_of_an_unknown_step_or_run_is_one_line(shell) -> None:
    first = run_cell(shell, cell=CHAIN)
    with pytest.raises(SpecError, match="has no step 'zz'"):
        airun_nb.fork(first.run_id, "zz", namespace=shell.user_ns)
    with pytest.raises(airun_nb.RunNotFound):
        airun_nb.fork("r-nothere", "a", namespace=shell.user_ns)


# --------------------------------------------------------------------------- diff
def test_diff_of_equal_runs_is_equal_everywhere(shell) -> None:
    first = run_cell(shell, cell=CHAIN, args="--new")
    second = run_cell(shell, cell=CHAIN, args="--new")
    df = airun_nb.diff(first.run_id, second.run_id)
    assert list(df["step"]) == ["a", "b", "c", "d"]
    assert df["equal"].all()
    assert set(df["how_a"]) == {"executed"} and set(df["how_b"]) == {"executed"}


def test_diff_after_changed_params_counts_changed_cells_and_keys(shell) -> None:
    first = run_cell(shell, args="--new")
    second = run_cell(shell, args="--new -p n=4")
    df = airun_nb.diff(first.run_id, second.run_id).set_index("step")
    assert not df.loc["load", "equal"]
    assert "shape 6x2 → 8x2" in df.loc["load", "summary"]
    assert "cells changed" not in df.loc["load", "summary"]  # the first 6 rows are the same
    assert df.loc["other", "equal"]
    rows = airun_nb.diff(first.run_id, second.run_id, step="load")
    assert len(rows) == 2 and set(rows["_side"]) == {"B"}


@ON_BOTH
def test_diff_after_changed_code_names_cells_and_json_keys(shell, db: Any) -> None:
    first = run_cell(shell)
    assert shell.run_cell(
        "def normalize(x):\n    return x * 3\n"
        "def other():\n    tick('other')\n    return {'answer': 43, 'extra': 1}"
    ).success
    second = run_cell(shell)
    df = airun_nb.diff(first.run_id, second.run_id).set_index("step")
    assert df.loc["load", "equal"] and df.loc["load", "how_b"] == "replayed"
    assert not df.loc["clean", "equal"]
    assert df.loc["clean", "summary"] == "5 cells changed"  # amount 0.0 stays 0.0
    assert df.loc["other", "summary"] == "changed keys: answer; added keys: extra"
    text = shell.run_line_magic("workflow", f"diff {first.run_id} {second.run_id}")
    assert list(text["step"]) == list(df.index)


# --------------------------------------------------------------------------- replay
def test_replay_reports_the_step_whose_function_changed(shell, db: Path) -> None:
    first = run_cell(shell)
    runs_before = len(airun_nb.runs())
    assert shell.run_cell("def flag(df):\n    return df.assign(big=df['amount'] > 0)").success
    report = replay(first.run_id, namespace=shell.user_ns).set_index("step")
    assert report.loc["flag", "equal"] == False  # noqa: E712
    assert "cells changed" in report.loc["flag", "summary"]
    assert report.loc["load", "equal"] and report.loc["clean", "equal"]
    assert report.loc["totals", "equal"]  # run against the recorded flag output
    assert len(airun_nb.runs()) == runs_before  # the real store is untouched
    with pytest.raises(AssertionError, match="flag"):
        assert_replays(first.run_id, namespace=shell.user_ns)


# --------------------------------------------------------------------------- after a restart
@ON_BOTH
def test_why_diff_and_fork_work_from_a_new_process(shell, db: Any, tmp_path: Path) -> None:
    plain = "\n".join(line for line in CHAIN.splitlines() if "tick(" not in line)
    first = run_cell(shell, cell=plain)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRUN_")}
    env["AIRUN_DB"] = str(db)

    def airun(*args: str) -> str:
        proc = subprocess.run([*AIRUN, *args], capture_output=True, text=True, env=env, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    out = airun("fork", first.run_id, "--from", "c", "--param", "base=2")
    assert "completed" in out
    forked = airun_nb.runs().iloc[-1]
    assert forked["run_id"] != first.run_id
    out = airun("why", str(forked["run_id"]))
    assert "the fork point" in out and "replayed" in out
    out = airun("diff", first.run_id, str(forked["run_id"]))
    assert "changed keys: base" in out
    code = textwrap.dedent(
        f"""
        import airun_nb
        df = airun_nb.why({str(forked["run_id"])!r})
        print(list(df['decision']))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.stdout.strip() == "['replayed', 'replayed', 'ran', 'ran']", proc.stderr
    assert pd.notna(forked["run_id"])


def test_sql_step_tracks_the_notebook_dataframes_it_queries(shell) -> None:
    assert shell.run_cell(
        "targets = pd.DataFrame({'region': ['n', 's'], 'goal': [1.0, 2.0]})"
    ).success
    cell = """%%workflow sqlnames
steps:
  - id: goals
    sql: select * from targets order by region
  - id: fixed
    python: |
      result = 1
"""
    run_cell(shell, cell=cell)
    assert shell.run_cell("targets.loc[0, 'goal'] = 5.0").success
    second = run_cell(shell, cell=cell)
    rows = why_rows(second.run_id)
    assert rows["goals"]["decision"] == "ran"
    assert rows["goals"]["changed"] == ["global targets changed"]
    assert second.outputs["goals"]["goal"].tolist() == [5.0, 2.0]


def test_one_changed_cell_of_a_big_notebook_frame_reruns_the_step_that_reads_it(shell) -> None:
    # over 8 MB: hashed by the bytes of its columns, not row by row
    assert shell.run_cell(
        "import numpy as np\n"
        "big = pd.DataFrame({'a': np.arange(700_000, dtype='float64'), 'c': ['x'] * 700_000})\n"
        "def total():\n"
        "    tick('total')\n"
        "    return float(big['a'].sum()) + int((big['c'] == 'y').sum())\n"
    ).success
    cell = "%%workflow bigframe\nsteps:\n  - id: total\n    call: total\n"
    first = run_cell(shell, cell=cell)
    second = run_cell(shell, cell=cell)
    assert why_rows(second.run_id)["total"]["changed"] == []  # hashed alike: nothing changed
    expected = first.outputs["total"]
    for change, delta in (("big.loc[699_999, 'a'] = 0.0", -699_999), ("big.loc[5, 'c'] = 'y'", 1)):
        assert shell.run_cell(change).success
        again = run_cell(shell, cell=cell)
        rows = why_rows(again.run_id)
        assert rows["total"]["decision"] == "ran", change
        assert rows["total"]["changed"] == ["global big changed"]
        expected += delta
        assert again.outputs["total"] == expected


@pytest.mark.slow
def test_time_travel_notebook_reproduces_its_saved_outputs(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    notebook = root / "notebooks" / "time_travel.ipynb"
    assert notebook.exists(), "python notebooks/make_time_travel.py"
    copy = tmp_path / "time_travel.ipynb"
    copy.write_text(notebook.read_text())
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRUN_")}
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "--nbval",
        str(copy),
        "--nbval-sanitize-with",
        str(root / "tests" / "nbval_sanitize.cfg"),
        "-p",
        "no:cacheprovider",
        "-q",
        "--rootdir",
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
