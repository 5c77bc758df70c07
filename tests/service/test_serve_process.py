"""How the ``airun serve`` process ends: SIGTERM and Ctrl-C are a normal exit."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from airun_nb.store.database import Store
from support import AIRUN
from support.service import free_port, running_server


def test_sigterm_ends_the_service_as_a_normal_exit(db: Path, tmp_path: Path) -> None:
    """After SIGTERM the service shuts down and exits 0 with its exit handlers run (not killed
    by the signal uvicorn raises again): the store's last fold and the coverage data of the
    service process are written."""
    Store.open(db)
    with running_server(db, tmp_path) as server:
        assert httpx.get(server.url + "/v1/health", timeout=30).status_code == 200
        proc = server.proc
    assert proc.returncode == 0, server.log.read_text()
    assert "Traceback" not in server.log.read_text()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_before_the_service_answers_is_a_quiet_exit(db: Path, tmp_path: Path, sig) -> None:
    """Stopping the service as soon as it says it listens prints no traceback."""
    Store.open(db)
    proc = subprocess.Popen(
        [*AIRUN, "serve", "--db", str(db), "--port", str(free_port())],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()  # "airun approvals on http://...": the handlers are set
    assert "airun approvals on" in first
    proc.send_signal(sig)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, first + rest
    assert "Traceback" not in rest and "KeyboardInterrupt" not in rest
