"""``airun submit`` and ``airun worker``: runs on a queue, run by worker processes.

``submit`` checks a workflow file, queues a run of it and prints the run id; ``worker`` claims
queued runs and runs them, on as many processes as ``--concurrency`` says.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import click

from airun_nb.cli.storeoption import STORE
from airun_nb.errors import AirunError, SpecError
from airun_nb.settings.environment import StoreURL

_db = click.option(
    "--db",
    type=STORE,
    envvar="AIRUN_DB",
    help="Store file or postgresql:// URL (default: $AIRUN_DB or ./airun.duckdb).",
)


@click.command("submit")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--param", "-p", "params", multiple=True, metavar="KEY=VALUE", help="A param.")
@click.option("--queue", "-q", default="default", show_default=True, help="The queue.")
@_db
def submit_cmd(file: Path, params: tuple[str, ...], queue: str, db: Path | StoreURL | None) -> None:
    """Queue a run of a workflow file for `airun worker`; prints its run id. The workflow is
    checked first (its steps resolve, its templates name what exists): a problem is one line
    and nothing is queued."""
    from airun_nb.cli.migrate import param_value
    from airun_nb.engine.worker import submit
    from airun_nb.spec.validation import read_input
    from airun_nb.store.opening import open_store
    from airun_nb.workflow import Workflow

    given: dict[str, Any] = {}
    for item in params:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SpecError(f"--param takes KEY=VALUE, got {item!r}")
        given[key.strip()] = param_value(key.strip(), value, "--param")
    try:
        read_input(file)  # a regular file of bounded size, or one line
        wf = Workflow.from_file(file)
        run_id = submit(wf.spec, open_store(db), params=given, queue=queue)
    except AirunError as exc:  # what and where: the file's name leads
        if str(file) not in exc.message:
            exc.message = f"{file}: {exc.message}"
        raise
    click.echo(run_id)


@click.command("worker")
@click.option(
    "--queue", "-q", "queues", multiple=True, help="A queue to serve (repeat; default: default)."
)
@click.option(
    "--concurrency",
    "-c",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Runs at once, each in its own worker process.",
)
@click.option("--exit-when-idle", is_flag=True, help="Stop when no run is left to claim.")
@click.option(
    "--trust-stored-code",
    is_flag=True,
    help="Load the notebook functions a notebook stored for its submitted runs (signed ones).",
)
@click.option("--name", help="The worker's name in the queue (default: HOST:PID).")
@click.option("--poll", type=float, default=0.5, hidden=True, help="Seconds between looks.")
@_db
def worker_cmd(
    queues: tuple[str, ...],
    concurrency: int,
    exit_when_idle: bool,
    trust_stored_code: bool,
    name: str | None,
    poll: float,
    db: Path | StoreURL | None,
) -> None:
    """Claim queued runs and run them until stopped (SIGTERM: the run in progress is
    interrupted and handed back to the queue, where another worker resumes it)."""
    if concurrency > 1:
        sys.exit(_many(concurrency))
    from airun_nb.engine.worker import Worker
    from airun_nb.settings import file as settings
    from airun_nb.store.opening import open_store

    worker = Worker(
        open_store(db),
        queues or ("default",),
        name=name,
        exit_when_idle=exit_when_idle,
        trust_stored_code=trust_stored_code or settings.trust_stored_code(),
        poll=poll,
        say=lambda line: click.echo(line),
    )
    worker.serve()


def _many(n: int) -> int:
    """``--concurrency N``: N worker processes with the same options; signals are passed on.
    The exit status is the worst of theirs."""
    argv = list(sys.argv[1:])
    for i, word in enumerate(argv):  # every other option is passed on as given
        if word in ("--concurrency", "-c") and i + 1 < len(argv):
            argv[i + 1] = "1"
        elif word.startswith("--concurrency="):
            argv[i] = "--concurrency=1"
    children = [subprocess.Popen([sys.executable, "-m", "airun_nb", *argv]) for _ in range(n)]

    def forward(signum: int, frame: Any) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, forward)
    codes = [child.wait() for child in children]
    if any(c < 0 for c in codes):
        raise AirunError(f"a worker process ended on signal {-min(codes)}")
    return max(codes)


COMMANDS = [submit_cmd, worker_cmd]
