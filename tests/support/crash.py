"""Helpers for the crash tests: real kernels driven by nbclient, killed for real.

A :class:`Kernel` is one ``python3`` kernel (the ipykernel spec of the running interpreter:
jupyter_client swaps the spec's ``python`` for ``sys.executable``) started in a work folder and
driven one cell at a time with ``NotebookClient.execute_cell``. Its store is the default one,
``airun.duckdb`` in the kernel's working directory, so every scenario gets its own store by
getting its own folder.

Side effects are counted outside the store: every step body starts by appending a line to
``counts/<step>.txt`` in the work folder (see :data:`STEP_LIB`), so a test can tell how many
times each step body really ran, whatever the store says.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nbformat
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError

from support import cell_text

KERNEL_NAME = "python3"
STARTUP_TIMEOUT = 60
CELL_TIMEOUT = 60

# Code run in every kernel before the workflow cell: the step library. Every step body starts
# with tick(<step id>), which appends one line to counts/<step>.txt (a file outside the store).
# ``enrich`` sleeps AIRUN_TEST_SLOW seconds when a test sets that in a cell of the kernel that is
# going to be killed (never in the resume or the reference kernel), so the same function source
# (same code hash) runs fast on resume.
STEP_LIB = textwrap.dedent(
    """
    import os, time, pathlib
    import numpy as np
    import pandas as pd
    import airun_nb

    COUNTS = pathlib.Path("counts")
    COUNTS.mkdir(exist_ok=True)

    def tick(step):
        with open(COUNTS / f"{step}.txt", "a") as f:
            f.write(f"{os.getpid()}\\n")
        # AIRUN_TEST_ARM="<step>@<crash point>" (set by a test in the kernel that is to die)
        # arms AIRUN_CRASH_AT from inside <step>'s body, once: the next time the engine or
        # the store passes <crash point>, the kernel SIGKILLs itself.
        step_at, _, point = os.environ.get("AIRUN_TEST_ARM", "").partition("@")
        if step_at == step and point:
            del os.environ["AIRUN_TEST_ARM"]
            os.environ["AIRUN_CRASH_AT"] = point

    def make_orders(n):
        tick("orders")
        rng = np.random.default_rng(7)
        df = pd.DataFrame({
            "region": rng.choice(["north", "south", "east", "west"], n),
            "product": rng.choice(["widget", "gadget", "gizmo"], n),
            "amount": rng.integers(10, 500, n).astype(float),
        })
        df.loc[rng.choice(n, n // 6, replace=False), "amount"] = np.nan
        return df

    def fx_rates():
        tick("rates")
        return {"north": 1.0, "south": 1.1, "east": 0.9, "west": 1.25}

    def enrich(orders, rates, marker=None):
        tick("enrich")
        if marker is not None:
            pathlib.Path(marker).write_text(str(os.getpid()))
        time.sleep(float(os.environ.get("AIRUN_TEST_SLOW", "0")))
        df = orders.dropna().copy()
        df["amount_eur"] = df["amount"] * df["region"].map(rates)
        return df.reset_index(drop=True)

    def chain(i, prev=None):
        tick(f"s{i:02d}")
        time.sleep(0.05)
        if i % 5 == 0:
            base = 0 if prev is None else (prev if isinstance(prev, int) else int(prev["v"].sum()))
            return pd.DataFrame({"i": list(range(i)), "v": [base + k * i for k in range(i)]})
        if prev is None:
            return i
        if isinstance(prev, pd.DataFrame):
            return int(prev["v"].sum()) + i
        return prev + i
    """
)

# The 4-step workflow of scenarios (a) and (c): two independent loads, a slow-able enrich step
# (call) and a SQL aggregate.
WF_ORDERS = textwrap.dedent(
    """
    %%workflow orders_report
    params: {n: 60}
    steps:
      - id: orders
        call: make_orders
        with: {n: "{{ params.n }}"}
      - id: rates
        call: fx_rates
      - id: enrich
        needs: [orders, rates]
        call: enrich
        with: {orders: "{{ steps.orders.output }}", rates: "{{ steps.rates.output }}", marker: in_enrich.marker}
      - id: totals
        needs: [enrich]
        sql: >
          select region, count(*) as n, sum(amount_eur) as total
          from {{ steps.enrich }} group by region order by region
        output: totals
    """
).strip()

# Scenario (b): a DataFrame step first, so the first fold with records in it runs while that
# DataFrame's output table is being committed; then python and SQL steps.
WF_FOLD = textwrap.dedent(
    """
    %%workflow fold_report
    steps:
      - id: rates
        call: fx_rates
      - id: orders
        needs: [rates]
        call: make_orders
        with: {n: 48}
      - id: clean
        needs: [orders]
        python: |
          tick("clean")
          result = steps.orders.output.dropna()
      - id: audit
        needs: [clean]
        python: |
          tick("audit")
          airun_nb.events()                  # a query of events folds the journal into DuckDB
          result = int(len(airun_nb.runs()))
      - id: enrich
        needs: [audit, rates]          # after audit: one step in flight at a time
        call: enrich
        with: {orders: "{{ steps.clean.output }}", rates: "{{ steps.rates.output }}"}
      - id: totals
        needs: [enrich]
        sql: select region, sum(amount_eur) as total from {{ steps.enrich }} group by region order by region
        output: totals
    """
).strip()


def chain_workflow(n: int = 30) -> str:
    """A linear workflow of ``n`` quick (0.05 s) call steps; every fifth returns a DataFrame."""
    lines = ["%%workflow chain30", "steps:"]
    for i in range(1, n + 1):
        lines.append(f"  - id: s{i:02d}")
        lines.append("    call: chain")
        if i == 1:
            lines.append(f"    with: {{i: {i}}}")
        else:
            lines.append(f"    needs: [s{i - 1:02d}]")
            lines.append(f'    with: {{i: {i}, prev: "{{{{ steps.s{i - 1:02d}.output }}}}"}}')
    lines.append("    output: final")
    return "\n".join(lines)


def dump_cell(path: str = "result.pkl") -> str:
    """A cell that pickles what the finished run left: outputs, history, plan."""
    return textwrap.dedent(
        f"""
        import pickle
        _r = airun_nb.last_run()
        with open({path!r}, "wb") as _f:
            pickle.dump({{
                "run_id": _r.run_id,
                "status": _r.status,
                "mode": _r.plan.mode if _r.plan else None,
                "replayed": list(_r.replayed),
                "executed": list(_r.executed),
                "outputs": {{k: _r.outputs[k] for k in _r.outputs}},
                "runs": airun_nb.runs(),
                "steps": airun_nb.steps(_r.run_id),
                "attempts": airun_nb.attempts(_r.run_id),
                "events": airun_nb.events(_r.run_id),
            }}, _f)
        print("dumped", _r.run_id, _r.status)
        """
    ).strip()


def kernel_env(**extra: str) -> dict[str, str]:
    """The environment for a kernel: ours without any AIRUN_* setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRUN_")}
    env.update(extra)
    return env


class Kernel:
    """One real kernel in ``cwd``, driven cell by cell through nbclient."""

    def __init__(
        self, cwd: Path, *, env: dict[str, str] | None = None, timeout: int = CELL_TIMEOUT
    ) -> None:
        self.cwd = Path(cwd)
        self.cwd.mkdir(parents=True, exist_ok=True)
        self.env = env if env is not None else kernel_env()
        self.nb = nbformat.v4.new_notebook()
        # The async manager gives nbclient an async client: with a blocking one, nbclient's
        # output poll blocks its event loop and a dead kernel is never noticed.
        self.km = AsyncKernelManager(kernel_name=KERNEL_NAME)
        self.client = NotebookClient(
            self.nb,
            km=self.km,
            kernel_name=KERNEL_NAME,
            timeout=timeout,
            startup_timeout=STARTUP_TIMEOUT,
            allow_errors=False,
            shutdown_kernel="immediate",
            resources={"metadata": {"path": str(self.cwd)}},
        )
        self.started = False

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> Kernel:
        self.client.start_new_kernel(env=self.env)
        self.client.start_new_kernel_client()
        self.started = True
        return self

    @property
    def process(self) -> Any:
        """The kernel's ``Popen`` (the ipykernel process itself, a child of ours)."""
        provisioner = getattr(self.km, "provisioner", None)
        proc = getattr(provisioner, "process", None) if provisioner is not None else None
        return proc if proc is not None else self.km.kernel  # older jupyter_client

    @property
    def pid(self) -> int:
        return int(self.process.pid)

    def alive(self) -> bool:
        return self.process.poll() is None  # poll() also reaps a killed child

    def kill(self) -> None:
        """SIGKILL the kernel process from outside."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)

    def wait_dead(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                return True
            time.sleep(0.05)
        return False

    def shutdown(self) -> None:
        if not self.started:
            return
        self.started = False
        with contextlib.suppress(Exception):
            self.client._cleanup_kernel()

    def __enter__(self) -> Kernel:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # -- cells -----------------------------------------------------------------------------
    def run(self, source: str) -> nbformat.NotebookNode:
        """Execute one cell; raise CellExecutionError / DeadKernelError like nbclient does."""
        cell = nbformat.v4.new_code_cell(source)
        self.nb.cells.append(cell)
        self.client.execute_cell(cell, len(self.nb.cells) - 1)
        return cell

    def run_expecting_death(self, source: str) -> nbformat.NotebookNode:
        """Execute a cell during which the kernel must die; fail if it completes instead."""
        cell = nbformat.v4.new_code_cell(source)
        self.nb.cells.append(cell)
        try:
            self.client.execute_cell(cell, len(self.nb.cells) - 1)
        except DeadKernelError:
            assert self.wait_dead(), "nbclient reported a dead kernel, but the process lives"
            return cell
        raise AssertionError(
            "the cell completed but the kernel was expected to die during it; outputs:\n"
            + text_of(cell)
        )


text_of = cell_text


def wait_for(
    predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.02
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


@contextlib.contextmanager
def killer(
    kernel: Kernel, *, when: Callable[[], bool], delay: float = 0.0, timeout: float = 30.0
) -> Iterator[dict[str, Any]]:
    """A thread that SIGKILLs ``kernel`` once ``when()`` holds (+ ``delay`` s).

    Use around the cell that is to be interrupted; yields a dict that tells whether and when
    the kill happened (``killed``, ``at``) or what went wrong (``error``).
    """
    state: dict[str, Any] = {"killed": False, "error": None}
    stop = threading.Event()

    def target() -> None:
        deadline = time.monotonic() + timeout
        try:
            while not when():
                if stop.is_set():
                    return
                if time.monotonic() >= deadline:
                    state["error"] = f"trigger not seen within {timeout:g} s"
                    return
                time.sleep(0.005)
            if delay:
                time.sleep(delay)
            kernel.kill()
            state["killed"] = True
            state["at"] = time.monotonic()
        except Exception as exc:  # pragma: no cover - reported by the test
            state["error"] = repr(exc)

    t = threading.Thread(target=target, name="kernel-killer", daemon=True)
    t.start()
    try:
        yield state
    finally:
        stop.set()
        t.join(timeout + delay + 5)


def counts(workdir: Path) -> dict[str, int]:
    """How many times each step body started, from ``counts/<step>.txt``."""
    out: dict[str, int] = {}
    d = Path(workdir) / "counts"
    if d.is_dir():
        for f in sorted(d.glob("*.txt")):
            out[f.stem] = len([ln for ln in f.read_text().splitlines() if ln.strip()])
    return out


def load_dump(workdir: Path, name: str = "result.pkl") -> dict[str, Any]:
    with open(Path(workdir) / name, "rb") as f:
        return pickle.load(f)  # written by our own kernel


def run_workflow(
    workdir: Path, workflow_cell: str, *, pre: list[str] | None = None, dump: bool = True
) -> tuple[Kernel, list[nbformat.NotebookNode]]:
    """Start a kernel in ``workdir``, run the setup cells and the workflow cell (and a dump).

    The kernel is shut down before returning; its cells are returned for inspection.
    """
    with Kernel(workdir) as k:
        cells = [k.run("%load_ext airun_nb"), k.run(STEP_LIB)]
        for src in pre or []:
            cells.append(k.run(src))
        cells.append(k.run(workflow_cell))
        if dump:
            cells.append(k.run(dump_cell()))
    return k, cells
