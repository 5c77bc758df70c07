"""A bounded soak: three real kernels and a terminal loop on ONE store, for a minute.

Each kernel runs small workflows cell after cell with the ``%%workflow`` magic (its own
workflow name, a call step, python steps and a call step that fails once and is retried) and
counts, in its own namespace, every run it finished. Meanwhile a loop of ``airun`` processes
(``runs``, ``history``, ``show``) reads the same file. At the end: no lock error anywhere, every
run each kernel counted is in the store, completed with all its steps (and the retried step's
attempts), no run the kernels did not count, and every terminal command exited 0.

``AIRUN_SOAK_SECONDS`` (default 60) sets how long the kernels keep starting runs.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from support import AIRUN
from support.live import LiveKernel

SOAK_SECONDS = float(os.environ.get("AIRUN_SOAK_SECONDS", "60"))
KERNELS = 3
CELL_TIMEOUT = 120.0  # seconds one run may take before the soak counts it as hung
CLI_TIMEOUT = 60.0
LOCK_WORDS = re.compile(r"StoreBusy|\bbusy\b|\blocked\b|lock timeout|could not set lock", re.I)

# Defined in every kernel before its first run. SOAK is the kernel's own count of its runs.
SETUP = textwrap.dedent(
    """\
    import json
    import airun_nb

    SOAK = {"runs": [], "status": {}, "flaky_calls": 0}
    _tries = {}

    def soak_load(kernel, seq):
        return {"kernel": kernel, "seq": seq, "values": list(range(seq % 7 + 1))}

    def soak_flaky(total, seq):
        # Fails on the first attempt of every odd run: the step's retry makes it succeed.
        SOAK["flaky_calls"] += 1
        _tries[seq] = _tries.get(seq, 0) + 1
        if seq % 2 and _tries[seq] == 1:
            raise ConnectionError(f"flaky on run {seq}")
        return total + 1

    def soak_record():
        run = airun_nb.last_run()
        SOAK["runs"].append(run.run_id)
        SOAK["status"][run.run_id] = str(run.status)
    """
)


def workflow_cell(kernel: int, seq: int) -> str:
    return textwrap.dedent(
        f"""\
        %%workflow soak_k{kernel} --new -p seq={seq}
        params: {{kernel: {kernel}, seq: 0}}
        steps:
          - id: load
            call: soak_load
            with: {{kernel: "{{{{ params.kernel }}}}", seq: "{{{{ params.seq }}}}"}}
          - id: total
            needs: [load]
            python: result = sum(steps.load.output["values"]) + 100 * {kernel}
          - id: flaky
            needs: [total]
            retry: {{attempts: 3, backoff: fixed, initial: 10ms}}
            call: soak_flaky
            with: {{total: "{{{{ steps.total.output }}}}", seq: "{{{{ params.seq }}}}"}}
          - id: label
            needs: [flaky]
            python: result = f"k{kernel}-{seq}-{{steps.flaky.output}}"
        """
    )


STEPS_PER_RUN = 4


class Soaker:
    """One kernel's loop: a workflow cell, then a cell that counts the run, again and again."""

    def __init__(self, index: int, kernel: LiveKernel) -> None:
        self.index = index
        self.kernel = kernel
        self.seq = 0
        self.pending: str | None = None  # msg_id of the counting cell in flight
        self.sent_at = 0.0

    def send(self) -> None:
        self.seq += 1
        self.kernel.start(workflow_cell(self.index, self.seq))
        self.pending = self.kernel.start("soak_record()")
        self.sent_at = time.monotonic()

    def done(self) -> bool:
        if self.pending is None:
            return True
        if self.kernel.idle_after(self.pending):
            self.pending = None
            return True
        if time.monotonic() - self.sent_at > CELL_TIMEOUT:
            raise AssertionError(
                f"kernel {self.index}: run {self.seq} did not finish within {CELL_TIMEOUT:g} s; "
                f"its output ends:\n{self.kernel.text()[-2000:]}"
            )
        return False


class CliLoop:
    """``airun runs``, ``airun history`` and ``airun show RUN`` one after another, forever."""

    def __init__(self, db: Path, cwd: Path, env: dict[str, str]) -> None:
        self.db, self.cwd, self.env = db, cwd, env
        self.proc: subprocess.Popen[str] | None = None
        self.args: list[str] = []
        self.started = 0.0
        self.turn = 0
        self.last_run: str | None = None
        self.results: list[tuple[list[str], int, str, float]] = []  # args, exit, stderr, s
        self.out_path = self.err_path = Path(cwd) / "cli.out"

    def step(self) -> None:
        """Collect the command in flight if it ended; start the next one."""
        if self.proc is not None:
            if self.proc.poll() is None:
                if time.monotonic() - self.started > CLI_TIMEOUT:
                    self.proc.kill()
                    _, err = self._output()
                    self.results.append((self.args, -9, f"timed out: {err}", CLI_TIMEOUT))
                    self.proc = None
                return
            out, err = self._output()
            self.results.append(
                (self.args, self.proc.returncode, err, time.monotonic() - self.started)
            )
            found = re.findall(r"\br-[0-9a-f]{8}\b", out)
            if found:
                self.last_run = found[-1]
            self.proc = None
        self.start_next()

    def start_next(self) -> None:
        choice = self.turn % 3
        self.turn += 1
        db = ["--db", str(self.db)]
        if choice == 0 or (choice == 2 and self.last_run is None):
            self.args = ["runs", *db]
        elif choice == 1:
            self.args = ["history", "--table", "steps", *db]
        else:
            self.args = ["show", str(self.last_run), *db]
        # Output goes to files, not pipes: a long history would fill a pipe nobody reads yet.
        self.out_path = self.cwd / f"cli-{self.turn}.out"
        self.err_path = self.cwd / f"cli-{self.turn}.err"
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.proc = subprocess.Popen(
                [*AIRUN, *self.args], cwd=self.cwd, env=self.env, stdout=out, stderr=err, text=True
            )
        self.started = time.monotonic()

    def _output(self) -> tuple[str, str]:
        """Wait for the command in flight and return its stdout and stderr."""
        assert self.proc is not None
        self.proc.wait()
        return self.out_path.read_text(), self.err_path.read_text()

    def finish(self) -> None:
        deadline = time.monotonic() + CLI_TIMEOUT
        while self.proc is not None and time.monotonic() < deadline:
            if self.proc.poll() is not None:
                _, err = self._output()
                self.results.append(
                    (self.args, self.proc.returncode, err, time.monotonic() - self.started)
                )
                self.proc = None
            else:
                time.sleep(0.05)
        self.kill()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
            self.results.append((self.args, -9, "killed at the end of the soak", 0.0))
        self.proc = None


def _env(db: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRUN_")}
    env.update(AIRUN_DB=str(db), AIRUN_USER="soak", AIRUN_IDENTITY="env")
    return env


def _kernel_count(kernel: LiveKernel) -> dict[str, Any]:
    msg_id = kernel.execute("print('SOAK ' + json.dumps(SOAK))")
    line = next(x for x in kernel.text(msg_id).splitlines() if x.startswith("SOAK "))
    count: dict[str, Any] = json.loads(line[5:])
    return count


@pytest.mark.slow
def test_three_kernels_and_a_terminal_on_one_store_lose_nothing_and_never_see_a_lock_error(
    tmp_path: Path,
) -> None:
    db = tmp_path / "soak.duckdb"
    env = _env(db)
    kernels: list[LiveKernel] = []
    cli = CliLoop(db, tmp_path, env)
    try:
        for i in range(KERNELS):
            cwd = tmp_path / f"k{i}"
            cwd.mkdir()
            kernels.append(LiveKernel(cwd, env))
        for k in kernels:
            k.execute("%load_ext airun_nb")
            k.execute(SETUP)
        soakers = [Soaker(i, k) for i, k in enumerate(kernels)]
        end = time.monotonic() + SOAK_SECONDS
        for s in soakers:
            s.send()
        # A terminal reads an existing store (reading never creates one): it starts once the
        # kernels' first run has made the file.
        made = time.monotonic() + CLI_TIMEOUT
        while not db.exists() and time.monotonic() < made:
            time.sleep(0.05)
        assert db.exists(), "no kernel made the store"
        cli.start_next()
        while any(s.pending for s in soakers) or time.monotonic() < end:
            for s in soakers:
                if s.done() and time.monotonic() < end:
                    s.send()
            if time.monotonic() < end:
                cli.step()
            time.sleep(0.02)
        cli.finish()
        counts = [_kernel_count(k) for k in kernels]
        outputs = [k.text() for k in kernels]
    finally:
        cli.kill()
        for k in kernels:
            k.shutdown()

    import airun_nb

    runs = airun_nb.runs(db=db)
    steps = airun_nb.steps(db=db)
    attempts = airun_nb.attempts(db=db)
    summary = {
        f"k{i}": {"runs": len(c["runs"]), "flaky_calls": c["flaky_calls"]}
        for i, c in enumerate(counts)
    }
    for name in ("runs", "history", "show"):
        took = [t for a, _, _, t in cli.results if a[0] == name]
        summary[f"airun {name}"] = {
            "commands": len(took),
            "slowest_s": round(max(took, default=0), 2),
        }
    print("soak:", json.dumps(summary), f"store: {len(runs)} runs, {len(steps)} steps")

    # No lock error reached a user: not in any kernel's output, not on the terminal.
    for i, text in enumerate(outputs):
        hits = [ln for ln in text.splitlines() if LOCK_WORDS.search(ln)]
        assert not hits, f"kernel {i} showed a lock error:\n" + "\n".join(hits[:5])
    for args, _code, err, _ in cli.results:
        assert not LOCK_WORDS.search(err), f"airun {' '.join(args)}: {err}"
    failed = [(a, c, e.strip()[-300:]) for a, c, e, _ in cli.results if c != 0]
    assert not failed, f"terminal commands failed: {failed[:5]}"
    assert len(cli.results) >= 3, "the terminal loop hardly ran"
    assert {a[0] for a, *_ in cli.results} == {"runs", "history", "show"}

    # Nothing lost, nothing extra: each kernel's count is exactly what the store holds.
    for i, count in enumerate(counts):
        assert count["runs"], f"kernel {i} finished no run in {SOAK_SECONDS:g} s"
        assert len(set(count["runs"])) == len(count["runs"]), f"kernel {i} reused a run id"
        assert set(count["status"].values()) == {"completed"}, count["status"]
        mine = runs[runs["workflow"] == f"soak_k{i}"]
        assert sorted(mine["run_id"]) == sorted(count["runs"]), (
            f"kernel {i}: store and kernel disagree: only in the store "
            f"{sorted(set(mine['run_id']) - set(count['runs']))}, only in the kernel "
            f"{sorted(set(count['runs']) - set(mine['run_id']))}"
        )
        assert set(mine["status"]) == {"completed"}, mine[["run_id", "status"]]
        assert (mine["steps"] == STEPS_PER_RUN).all(), mine[["run_id", "steps"]]
        assert (mine["completed_steps"] == STEPS_PER_RUN).all(), mine[["run_id", "steps"]]
        # Every attempt is kept: one a step, plus the failed first try of each odd run.
        theirs = attempts[attempts["run_id"].isin(count["runs"])]
        flaky = theirs[theirs["step_id"] == "flaky"]
        assert len(flaky) == count["flaky_calls"], (len(flaky), count["flaky_calls"])
        seqs = [json.loads(p)["seq"] for p in mine["params"]]
        assert len(set(seqs)) == len(seqs), f"kernel {i}: a run was recorded twice"
        odd = sum(1 for q in seqs if q % 2)
        assert count["flaky_calls"] == len(count["runs"]) + odd
        assert (flaky["status"] == "failed").sum() == odd, flaky[["run_id", "status"]]
        own = steps[steps["run_id"].isin(count["runs"])]
        assert len(own) == STEPS_PER_RUN * len(count["runs"])
        assert set(own["status"]) == {"completed"}, own[own["status"] != "completed"]
    assert len(runs) == sum(len(c["runs"]) for c in counts), "the store holds runs nobody made"
