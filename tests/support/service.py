"""A real `airun serve` on 127.0.0.1 for tests, and the workflow with a gate they decide."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import yaml

from support import AIRUN


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, db: Path | str, proc: subprocess.Popen[str], url: str, log: Path) -> None:
        self.db, self.proc, self.url, self.log = db, proc, url, log

    def client(self, token: str | None = None, **kw: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kw)


@contextlib.contextmanager
def running_server(
    db: Path | str, cwd: Path, env: dict[str, str] | None = None
) -> Iterator[Server]:
    """Start `airun serve --db DB` on a free loopback port; stop it (SIGTERM) afterwards."""
    port = free_port()
    log = cwd / f"serve-{port}.log"
    full_env = {**os.environ, **(env or {})}
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [*AIRUN, "serve", "--db", str(db), "--port", str(port)],
            stdout=fh,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=cwd,
            env=full_env,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"airun serve exited: {log.read_text()}")
            try:
                if httpx.get(url + "/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"airun serve did not answer: {log.read_text()}")
            time.sleep(0.1)
        yield Server(db, proc, url, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def make_token(db: Path | str, user: str, role: str = "approver") -> str:
    """A token made in this process (the CLI's own path is tested with `airun token`)."""
    from airun_nb.service import tokens
    from airun_nb.store.opening import open_store

    return tokens.create(open_store(db), user, role=role, created_by="test")


def cli_token(db: Path, user: str, role: str = "approver") -> str:
    out = subprocess.run(
        [*AIRUN, "token", "create", user, "--role", role, "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    token = out.stdout.strip()
    assert re.fullmatch(r"airun_[0-9a-f]{8}_\S+", token), out
    return token


# -- a workflow with a gate: every side effect is a line in effects.log in the working folder ----
def _effect(what: str) -> None:
    with open("effects.log", "a") as fh:
        fh.write(what + "\n")


def effects() -> list[str]:
    p = Path("effects.log")
    return p.read_text().split() if p.exists() else []


def prepare() -> dict[str, Any]:
    _effect("prepare")
    return {"rows": 3}


def unprepare() -> None:
    _effect("unprepare")


def ship() -> str:
    _effect("ship")
    return "shipped"


NAMESPACE = {"prepare": prepare, "unprepare": unprepare, "ship": ship}


def gated_spec(name: str = "deploy", **approval: Any) -> str:
    gate = {"message": "Ship {{ steps.prepare.output.rows }} rows?", **approval}
    doc = {
        "name": name,
        "steps": [
            {"id": "prepare", "call": "prepare", "compensate": {"call": "unprepare"}},
            {"id": "review", "needs": ["prepare"], "approval": gate},
            {"id": "ship", "needs": ["review"], "call": "ship"},
        ],
    }
    return yaml.safe_dump(doc, sort_keys=False)
