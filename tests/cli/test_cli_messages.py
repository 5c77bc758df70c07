"""What the ``airun`` command says and where it looks: decisions, a missing file, a missing
extra, and modules in the working folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import airun_nb
from airun_nb import Workflow
from support import AIRUN

GATED = """
name: gated
steps:
  - id: review
    approval: {message: "Ship?"}
"""


def _env(db: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRUN_")}
    # The owner allows `call:` to reach the working folder's payments module (call_modules).
    env.update(AIRUN_DB=str(db), AIRUN_IDENTITY="env", AIRUN_USER="alice")
    env.update(AIRUN_CALL_MODULES="payments")
    return env


def _airun(args: list[str], db: Path, cwd: Path, prelude: str = "") -> subprocess.CompletedProcess:
    command = AIRUN if not prelude else [AIRUN[0], "-c", prelude + "\n" + AIRUN[2]]
    return subprocess.run(
        [*command, *args], env=_env(db), cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_approve_says_how_the_run_goes_on(db: Path, tmp_path: Path) -> None:
    """The decision line does not claim the run waits for a resume when a notebook showing
    the gate continues it; it names both ways."""
    run = Workflow.from_yaml(GATED).run(db=db)
    done = _airun(["approve", run.run_id, "review"], db, tmp_path)
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip()
    assert line.startswith(f"approved gate review of run {run.run_id} as alice;")
    assert "a notebook showing this gate continues the run now" in line
    assert f"airun resume {run.run_id}" in line


def test_validate_on_a_missing_file_exits_10(db: Path, tmp_path: Path) -> None:
    done = _airun(["validate", "nothere.yaml"], db, tmp_path)
    assert done.returncode == 10
    assert done.stdout.strip() == "nothere.yaml: no such file"


def test_a_missing_extra_is_one_line_naming_it(db: Path, tmp_path: Path) -> None:
    """``airun serve`` / ``airun dashboard`` without their packages name the extra to install
    (the packages are hidden from the import system, as if not installed)."""
    Workflow.from_yaml(GATED).run(db=db)
    for command, extra, hidden in (
        ("serve", "serve", "fastapi"),
        ("dashboard", "dashboard", "textual"),
    ):
        done = _airun(
            [command], db, tmp_path, prelude=f"import sys; sys.modules[{hidden!r}] = None"
        )
        assert done.returncode == 1
        assert done.stderr.strip().splitlines() == [
            f"error: airun {command} needs the '{extra}' extra ({hidden} missing): "
            f"pip install 'airun_nb[{extra}]' (from a clone: pip install -e '.[{extra}]')"
        ]


def test_load_ext_without_the_jupyter_extra_names_it(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['ipywidgets'] = None\n"
        "from IPython.testing.globalipapp import get_ipython\n"
        "try:\n"
        "    get_ipython().run_line_magic('load_ext', 'airun_nb')\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert "AirunError %load_ext airun_nb needs the 'jupyter' extra (ipywidgets is missing)" in (
        done.stdout
    ), done.stdout + done.stderr


def test_the_command_imports_modules_of_the_working_folder(
    db: Path, tmp_path: Path, monkeypatch
) -> None:
    """``airun resume`` finds ``call: payments:charge`` in ./payments.py, as ``python -m`` would,
    without PYTHONPATH."""
    (tmp_path / "payments.py").write_text(
        "import pathlib\n"
        "def charge():\n"
        "    if not pathlib.Path('card-ok').exists():\n"
        "        raise RuntimeError('card declined')\n"
        "    return 'charged'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    wf = Workflow.from_yaml(
        "name: pay\non_failure: stop\nsteps:\n  - id: charge\n    call: payments:charge\n"
    )
    failed = wf.run(db=db, raise_on_failure=False)
    assert failed.status == "failed"
    (tmp_path / "card-ok").touch()
    # Launched as the console script is (a script file elsewhere; `python -c` would add the
    # working folder to sys.path itself).
    launcher = tmp_path / "bin" / "airun"
    launcher.parent.mkdir()
    launcher.write_text("import sys\nfrom airun_nb.cli.main import main\nsys.exit(main())\n")
    done = subprocess.run(
        [sys.executable, str(launcher), "resume", failed.run_id],
        env=_env(db),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert airun_nb.load_run(failed.run_id, db=db).outputs["charge"] == "charged"
