"""The event stream has one total order, the store's: no event lost or sent twice.

Four writer processes run workflows side by side, one of them with its clock 60 s slow (an
injected time source, ``AIRUN_CLOCK_OFFSET``); three SSE clients read `/v1/events` from a real
`airun serve` on 127.0.0.1: one reads as fast as it can, one slowly, one drops its connection
half-way and comes back with ``Last-Event-ID``. Every client receives every event the store
holds exactly once, in the store's order.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from support.service import make_token, running_server

WRITER = """
import sys
import airun_nb
wf = airun_nb.Workflow.from_yaml(
    "name: writer\\nsteps:\\n  - id: a\\n    python: result = 1\\n"
    "  - id: b\\n    needs: [a]\\n    python: result = 2\\n"
)
for _ in range(int(sys.argv[2])):
    print("RUN", wf.run(db=sys.argv[1], new=True).run_id, flush=True)
"""

RUNS_PER_WRITER = 15


class Client(threading.Thread):
    """Reads the stream from event 0 until it sees an event past ``target``."""

    def __init__(self, url: str, token: str, *, delay: float = 0.0, drop_after: int = 0):
        super().__init__(daemon=True)
        self.url, self.token, self.delay, self.drop_after = url, token, delay, drop_after
        self.got: list[tuple[int, dict[str, Any]]] = []
        self.target: int | None = None
        self.connected = threading.Event()
        self.done = threading.Event()
        self.reconnects = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self._read():
                self.reconnects += 1
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            self.done.set()

    def _read(self) -> bool:
        """One connection; True when finished, False when it dropped on purpose."""
        headers = {"Authorization": f"Bearer {self.token}"}
        params = {}
        if self.got:
            headers["Last-Event-ID"] = str(self.got[-1][0])
        else:
            params["after"] = "0"
        timeout = httpx.Timeout(120, read=120)
        with (
            httpx.Client(base_url=self.url, timeout=timeout) as c,
            c.stream("GET", "/v1/events", headers=headers, params=params) as resp,
        ):
            assert resp.status_code == 200, resp.read()
            self.connected.set()
            event_id: int | None = None
            for line in resp.iter_lines():
                if line.startswith("id:"):
                    event_id = int(line.split(":", 1)[1])
                elif line.startswith("data:"):
                    assert event_id is not None, "an event without an id"
                    if self.target is not None and event_id > self.target:
                        return True
                    self.got.append((event_id, json.loads(line.split(":", 1)[1])))
                    if self.delay:
                        time.sleep(self.delay)  # a slow reader
                    if self.drop_after and len(self.got) == self.drop_after and not self.reconnects:
                        return False
        raise AssertionError("the stream ended")


def _writer(db: Path, offset: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRUN_")}
    env["AIRUN_CLOCK_OFFSET"] = offset
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db), str(RUNS_PER_WRITER)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_every_client_gets_every_event_once_in_store_order(tmp_path: Path, store_db: Any) -> None:
    """4 writers (one 60 s slow), 3 clients (fast, slow, reconnecting): each client's events
    are exactly the store's, numbered 1..N in order, whatever the writers' clocks. On both
    backends: the DuckDB file (the stream looks at its files) and PostgreSQL (woken by NOTIFY)."""
    from airun_nb import Workflow
    from airun_nb.store.opening import open_store

    db = store_db
    open_store(db).release()
    token = make_token(db, "vera", role="viewer")
    with running_server(db, tmp_path) as server:
        clients = [
            Client(server.url, token),
            Client(server.url, token, delay=0.02),
            Client(server.url, token, drop_after=25),
        ]
        for c in clients:
            c.start()
        for c in clients:
            assert c.connected.wait(60), "a stream did not open"
        writers = [_writer(db, offset) for offset in ("0", "0", "0", "-60")]
        outs = [w.communicate(timeout=300) for w in writers]
        for w, (_out, err) in zip(writers, outs, strict=True):
            assert w.returncode == 0, err
        slow_runs = {line.split()[1] for line in outs[3][0].splitlines()}
        assert len(slow_runs) == RUNS_PER_WRITER

        store = open_store(db)
        rows = store.query(
            "SELECT seq, run_id, kind, epoch(ts) FROM events ORDER BY seq"
        )  # folds every writer's journal
        store.release()
        expected = [(int(seq), run_id, kind) for seq, run_id, kind, _ in rows]
        assert [e[0] for e in expected] == list(range(1, len(expected) + 1))
        assert len(expected) >= 4 * RUNS_PER_WRITER * 2  # each run: started, completed
        # the slow writer really stamped its events a minute early
        slow_ts = [ts for _, run_id, _, ts in rows if run_id in slow_runs]
        fast_ts = [ts for _, run_id, _, ts in rows if run_id not in slow_runs]
        assert max(slow_ts) < min(fast_ts) - 50 or min(slow_ts) < max(fast_ts) - 50

        for c in clients:
            c.target = expected[-1][0]
        # one more run: an event past the target, so that every client stops reading
        Workflow.from_yaml("name: last\nsteps:\n  - id: a\n    python: result = 1\n").run(db=db)
        for c in clients:
            assert c.done.wait(180), f"a client got {len(c.got)} of {len(expected)} events"
    for c in clients:
        assert c.error is None, c.error
        got = [(seq, ev["run_id"], ev["kind"]) for seq, ev in c.got]
        assert got == expected
        assert [ev["seq"] for _, ev in c.got] == [e[0] for e in expected]
    assert clients[2].reconnects == 1
