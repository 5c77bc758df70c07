"""The terminal's read commands take the light path: no pandas, pyarrow or kernel machinery."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import airun_nb
from airun_nb import Workflow

GATED = """
name: gated
steps:
  - id: prep
    python: "result = 1"
  - id: review
    approval: {message: "Ship?"}
    needs: [prep]
"""
PLAIN = """
name: plain
steps:
  - id: a
    python: "result = 1"
"""
# Runs one airun command in a fresh interpreter and reports which heavy modules it imported.
PROBE = """
import json, sys
from airun_nb.cli.main import main
sys.argv = ["airun", *json.loads(sys.argv[1])]
try:
    main()
except SystemExit as exc:
    code = exc.code or 0
else:
    code = 0
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"pandas", "pyarrow", "nbclient",
    "jupyter_client", "IPython", "jinja2", "numpy"})
print("PROBE " + json.dumps({"code": code, "heavy": heavy, "modules": sorted(sys.modules)}))
"""


def _probe(args: list[str], db: Path) -> tuple[dict, str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps([*args, "--db", str(db)])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    out, _, report = done.stdout.rpartition("PROBE ")
    return json.loads(report), out + done.stderr


@pytest.fixture
def gated_run(db: Path) -> str:
    result = Workflow.from_yaml(GATED).run(db=db)
    assert result.status == "waiting"
    for _ in range(3):
        Workflow.from_yaml(PLAIN).run(db=db, new=True)
    return result.run_id


@pytest.mark.parametrize("command", ["runs", "show", "runs_filtered", "approve"])
def test_read_commands_import_no_dataframe_or_kernel_library(
    db: Path, gated_run: str, command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each terminal read (and `airun approve`) works in a fresh interpreter without loading
    pandas, pyarrow, numpy, Jinja2 or the kernel libraries; approving loads no YAML reader,
    capability registry or engine either."""
    args = {
        "runs": ["runs"],
        "show": ["show", gated_run],
        "runs_filtered": ["runs", "-w", "gated"],
        "approve": ["approve", gated_run, "review"],
    }[command]
    monkeypatch.setenv("AIRUN_USER", "carol")
    report, out = _probe(args, db)
    assert report["code"] == 0, out
    assert report["heavy"] == [], out
    if command == "approve":
        assert "approved gate review" in out
        # With no policy configured, deciding a gate needs the store and the gate, not the
        # capability registry, the YAML reader or the engine.
        loaded = set(report["modules"])
        tops = {m.split(".")[0] for m in loaded}
        assert not tops & {"yaml", "regex"}, out
        assert not {m for m in loaded if m.startswith(("airun_nb.capabilities", "airun_nb.engine"))}
    if command == "show":
        assert "review" in out and "prep" in out


def test_runs_prints_the_same_table_as_the_dataframe_rendering(db: Path, gated_run: str) -> None:
    from airun_nb.history import runlist

    df = airun_nb.runs(db=db)
    columns = list(runlist.COLUMNS)
    view = df[columns].copy()
    view["created_at"] = view["created_at"].dt.strftime("%Y-%m-%d %H:%M:%S")
    view["duration"] = view["duration"].dt.total_seconds().map(lambda s: f"{s:.2f}s")
    view["duration"] = view["duration"].where(df["duration"].notna(), "")
    expected = view.fillna("").to_string(index=False)
    assert runlist.text(db) == expected
    newest_two = runlist.text(db, limit=2).splitlines()
    assert newest_two[0] == expected.splitlines()[0]
    assert newest_two[1:] == expected.splitlines()[-2:]
    only = runlist.text(db, workflow="gated").splitlines()
    assert len(only) == 2 and gated_run in only[1] and "waiting" in only[1]
    assert runlist.text(db, workflow="nope") == "(no runs)"


def test_every_command_of_the_other_modules_is_listed_and_runs(db: Path) -> None:
    from airun_nb.cli import agents as cli_agents
    from airun_nb.cli import migrate as cli_migrate
    from airun_nb.cli import queueing as cli_queueing
    from airun_nb.cli import transfer as cli_transfer
    from airun_nb.cli import travel as cli_travel
    from airun_nb.cli.group import LAZY_COMMANDS

    defined = {
        c.name: m.__name__.rsplit(".", 1)[1]
        for m in (cli_travel, cli_migrate, cli_agents, cli_transfer, cli_queueing)
        for c in m.COMMANDS
    }
    assert defined == LAZY_COMMANDS
    done = subprocess.run(
        [sys.executable, "-m", "airun_nb", "--help"], capture_output=True, text=True, timeout=120
    )
    for name in LAZY_COMMANDS:
        assert f"  {name} " in done.stdout, name
    done = subprocess.run(
        [sys.executable, "-m", "airun_nb", "why", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and "RUN_ID" in done.stdout


HELP_PROBE = """
import json, sys
from airun_nb.cli.main import main
sys.argv = ["airun", "--help"]
try:
    main()
except SystemExit:
    pass
print("PROBE " + json.dumps(sorted(sys.modules)))
"""


def test_help_imports_neither_the_store_nor_any_lazy_command() -> None:
    """`airun --help` lists every command (the lazily loaded ones with their help) without
    importing DuckDB, pandas, pyarrow, numpy, YAML, the store, the engine or the modules of the
    lazy commands: it starts as fast as click allows."""
    done = subprocess.run(
        [sys.executable, "-c", HELP_PROBE], capture_output=True, text=True, timeout=120
    )
    out, _, report = done.stdout.rpartition("PROBE ")
    modules = set(json.loads(report))
    heavy = {"duckdb", "pandas", "pyarrow", "numpy", "yaml", "jinja2", "IPython"}
    assert {m.split(".")[0] for m in modules} & heavy == set()
    ours = {m for m in modules if m.startswith("airun_nb.")}
    assert not {m for m in ours if m.split(".")[1] in ("store", "engine", "history")} - {
        "airun_nb.store",
        "airun_nb.store.faults",
    }
    assert not {"airun_nb.cli.travel", "airun_nb.cli.migrate"} & ours
    for name, words in [("why", "Why each step"), ("diff", "Compare two runs"), ("runs", "List")]:
        line = next(ln for ln in out.splitlines() if ln.strip().startswith(name + " "))
        assert words in line, out
