"""``make lab`` (the README's third command) starts JupyterLab on ``PORT=``, also as root."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from support.service import free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_make_lab_serves_jupyterlab_on_the_given_port(tmp_path: Path) -> None:
    """A real ``make lab PORT=N`` (with this interpreter's environment standing in for .venv, its
    set-up stamp fresh so nothing is installed) answers on 127.0.0.1:N; as root it passes
    ``--allow-root``, without which JupyterLab refuses to start."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "jupyter").symlink_to(Path(sys.executable).parent / "jupyter")
    (venv / ".core").touch()
    later = (ROOT / "pyproject.toml").stat().st_mtime + 60
    os.utime(venv / ".core", (later, later))
    port = free_port()
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    log = tmp_path / "lab.log"
    with open(log, "w") as fh:
        make = subprocess.Popen(
            [
                "make",
                "-C",
                str(ROOT),
                "lab",
                f"VENV={venv}",
                f"PORT={port}",
                "LAB_FLAGS=--no-browser --ServerApp.token= --ServerApp.ip=127.0.0.1",
            ],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120  # a safety net: it answers within seconds
        while True:
            assert make.poll() is None, f"make lab exited {make.returncode}: {log.read_text()}"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/lab", timeout=10).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"no JupyterLab on {port}: {log.read_text()}"
            time.sleep(0.2)
        if os.getuid() == 0:
            assert "--allow-root" in log.read_text()
    finally:
        os.killpg(make.pid, signal.SIGTERM)
        make.wait(timeout=60)
