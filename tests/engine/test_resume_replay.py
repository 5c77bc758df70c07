"""Resume is replay: a step that finished in a run is never executed again when the run resumes.

A run `a: call f` -> gate -> `b: call g` waits at the gate, `f` changes (or, for stored code, is
loaded from the store in another process), the gate is approved and the run resumes in each of
the ways a run resumes: the cell run again, `%workflow resume`, `airun resume` and the decision
continuing it in the kernel. A ledger file outside the store counts the step bodies: `a` ran
once and `b` once, whatever changed, and a resume whose code changed says so in one line.
A real IPython shell, real `airun` processes, a real store.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from support import AIRUN

CELL = textwrap.dedent(
    """\
    %%workflow replay
    steps:
      - id: a
        call: {f}
      - id: gate
        needs: [a]
        approval:
          message: "go on?"
          allow_self_approval: true
      - id: b
        needs: [gate]
        call: {g}
    """
)

BODIES = textwrap.dedent(
    """\
    import os

    def f():
        with open(os.environ["AIRUN_TEST_LEDGER"], "a") as out:
            out.write("a\\n")
        return {value}

    def g():
        with open(os.environ["AIRUN_TEST_LEDGER"], "a") as out:
            out.write("b\\n")
        return "g"
    """
)


def _ledger(path: Path) -> Counter[str]:
    return Counter(path.read_text().split()) if path.exists() else Counter()


def _cli(tmp_path: Path, db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    keep = ("AIRUN_CONFIG_DIR",)  # the signing key the notebook's stored code was signed with
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRUN_") or k in keep}
    env.update(
        AIRUN_CALL_MODULES="*",  # the owner lets `call:` reach the test's modules
        AIRUN_DB=str(db),
        AIRUN_USER="alice",
        AIRUN_IDENTITY="env",
        AIRUN_TEST_LEDGER=str(tmp_path / "ledger"),
        PYTHONPATH=os.pathsep.join([str(tmp_path), *sys.path]),
    )
    return subprocess.run(
        [*AIRUN, *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )


WAYS = [
    ("notebook", "cell"),
    ("notebook", "magic"),
    ("notebook", "decision"),
    ("stored", "cli"),
    ("stored", "cell"),
    ("module", "cell"),
    ("module", "magic"),
    ("module", "cli"),
    ("module", "decision"),
]


@pytest.mark.parametrize(("code", "way"), WAYS)
def test_a_resumed_run_never_runs_a_finished_step_again(
    ipython, db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: str, way: str
) -> None:
    """`a` finished before the gate: however the run resumes and whatever changed in `f`, its
    body ran exactly once, `b` ran once, and a changed `f` is named in one line."""
    ledger = tmp_path / "ledger"
    monkeypatch.setenv("AIRUN_TEST_LEDGER", str(ledger))
    monkeypatch.setenv("AIRUN_USER", "alice")
    module = f"replaymod_{code}_{way}"
    if code == "module":
        (tmp_path / f"{module}.py").write_text(BODIES.format(value=1))
        monkeypatch.syspath_prepend(str(tmp_path))
        cell = CELL.format(f=f"{module}:f", g=f"{module}:g")
    else:
        if code == "stored":
            ipython.run_line_magic("config", "Workflow.store_code = True")
        ipython.run_cell(BODIES.format(value=1)).raise_error()
        cell = CELL.format(f="f", g="g")
    try:
        ipython.run_cell(cell).raise_error()
        run_id = ipython.run_cell("import airun_nb; airun_nb.last_run().run_id").result
        assert _ledger(ledger) == Counter({"a": 1})

        # What changes between the gate and the resume: f's code (stored code: nothing, the
        # other process loads what the notebook stored).
        changed = code != "stored" or way != "cli"
        if code == "module":
            (tmp_path / f"{module}.py").write_text(BODIES.format(value=2))
            sys.modules.pop(module, None)
        elif changed:
            ipython.run_cell(BODIES.format(value=2)).raise_error()

        if way != "decision":
            # This way, and nothing else, continues the run: the kernel stops watching its gate
            # (as if it had exited), so a decision from elsewhere does not continue it here.
            from airun_nb.jupyter.watcher import WATCHER

            WATCHER.clear()
            approved = _cli(tmp_path, db, "approve", run_id, "gate")
            assert approved.returncode == 0, approved.stderr
        if way == "cli":
            trust = ["--trust-stored-code"] if code == "stored" else []  # the resuming side opts in
            done = _cli(tmp_path, db, "resume", run_id, *trust)
            assert done.returncode == 0, done.stdout + done.stderr
            said = [line for line in done.stderr.splitlines() if "changed since" in line]
            assert len(said) == (1 if changed else 0), done.stderr
        else:
            with pytest.warns(Warning) if changed else _no_warning() as caught:
                if way == "cell":
                    ipython.run_cell(cell).raise_error()
                elif way == "magic":
                    ipython.run_line_magic("workflow", f"resume {run_id}")
                else:
                    from airun_nb.jupyter.widgets import gate_widgets

                    gate_widgets()[-1].approve_button.click()
            lines = [str(w.message) for w in caught if "changed since" in str(w.message)]
            assert len(lines) == (1 if changed else 0)
            if changed:
                assert "a (function " in lines[0] and "\n" not in lines[0]

        import airun_nb

        runs = airun_nb.runs()
        assert runs.set_index("run_id").loc[run_id, "status"] == "completed"
        assert _ledger(ledger) == Counter({"a": 1, "b": 1})
        steps = airun_nb.steps(run_id).set_index("step_id")
        assert steps.loc["a", "attempts"] == 1
        kinds = list(airun_nb.events(run_id)["kind"])
        assert kinds.count("resume_code_changed") == (1 if changed else 0)
    finally:
        sys.modules.pop(module, None)


class _no_warning:
    """A stand-in for pytest.warns when no warning is expected: records what is raised."""

    def __enter__(self) -> list[object]:
        import warnings

        self._ctx = warnings.catch_warnings(record=True)
        caught = self._ctx.__enter__()
        warnings.simplefilter("always")
        return caught

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)
