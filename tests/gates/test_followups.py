"""Reminders and escalation of an open gate: ``approval.remind`` and ``approval.escalate``.

Real DuckDB stores, a real loopback webhook, real watcher processes. Follow-ups are measured on
the store's clock from the gate's opening, so the tests use the shortest periods allowed (1 s)
and wait for the store to record them (never a sleep, never a timed assertion).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

import airun_nb
from airun_nb import ApprovalError, SpecError, Workflow
from airun_nb.gates import followup
from airun_nb.gates import gate as gate_mod
from airun_nb.store.database import Store
from airun_nb.store.opening import open_store
from support import AIRUN

SAFETY = 120.0  # seconds: only a safety net for waiting on the store


class _Hook(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.received.append(json.loads(body))  # type: ignore[attr-defined]
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    server.received = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def hook_url(server: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/hooks/gates"


def spec(approval: dict[str, Any]) -> str:
    doc = {
        "name": "payout",
        "steps": [
            {"id": "review", "approval": {"message": "Pay out?", **approval}},
            {"id": "pay", "needs": ["review"], "python": "result = 'paid'"},
        ],
    }
    return yaml.safe_dump(doc, sort_keys=False)


def start(text: str, db: Path) -> str:
    result = Workflow.from_yaml(text).run(db=db, raise_on_failure=False)
    assert result.status == "waiting"
    return result.run_id


def gate_events(db: Path, run_id: str, kind: str) -> list[dict[str, Any]]:
    df = airun_nb.events(run_id, db=db)
    return [
        {**r, "detail": json.loads(r["detail"]) if isinstance(r["detail"], str) else {}}
        for r in df[df["kind"] == kind].to_dict("records")
    ]


def sweep_until(db: Path, done: Callable[[], bool]) -> None:
    """Sweep (as a watcher does) until the store shows what ``done`` waits for."""
    store = open_store(db)
    limit = time.monotonic() + SAFETY
    while not done():
        assert time.monotonic() < limit, "the store never showed the follow-up"
        result = followup.sweep(store)
        if not result.fired and result.next_due is not None:
            wait_clock(store, result.next_due)


def wait_clock(store: Store, when: float) -> None:
    """Wait for the store's clock (what follow-ups are measured on) to reach ``when``."""
    limit = time.monotonic() + SAFETY
    tick = threading.Event()
    while store.clock() < when:
        assert time.monotonic() < limit, "the store's clock never reached the due time"
        tick.wait(0.1)  # a poll of the store's clock, not a timed expectation


def test_a_reminder_renotifies_the_webhook_while_the_gate_is_open(
    store_db: Path | str, webhook: ThreadingHTTPServer
) -> None:
    """``remind: 1s`` posts the gate again (marked as a reminder, with its period) through the
    same notify path, records a ``gate_reminded`` event, and stops once the gate is decided;
    on both backends."""
    db = store_db
    run_id = start(spec({"approvers": ["bob"], "remind": "1s", "notify": hook_url(webhook)}), db)
    received = webhook.received  # type: ignore[attr-defined]
    assert len(received) == 1 and "event" not in received[0]  # the opening
    sweep_until(db, lambda: bool(gate_events(db, run_id, "gate_reminded")))
    reminders = [r for r in received if r.get("event") == "reminder"]
    assert reminders, "the reminder was recorded but not sent"
    first = reminders[0]
    assert first["message"] == "Reminder: Pay out?"
    assert first["run_id"] == run_id and first["gate"] == "review"
    assert first["commands"]["approve"].startswith(f"airun approve {run_id} review")
    assert gate_events(db, run_id, "notified")[-1]["detail"]["for"] == "reminder"

    airun_nb.approve(run_id, "review", by="bob", db=db)
    recorded = len(gate_events(db, run_id, "gate_reminded"))
    sent = len(received)
    result = followup.sweep(open_store(db))
    assert result.fired == [] and result.next_due is None
    assert len(gate_events(db, run_id, "gate_reminded")) == recorded
    assert len(received) == sent


def test_two_watchers_send_each_reminder_once(
    store_db: Path | str, webhook: ThreadingHTTPServer
) -> None:
    """Two watcher processes sweeping the same store at once: every reminder period is recorded
    once and posted once (the check and the write hold the store's lease, or on PostgreSQL its
    writer lock)."""
    db = store_db
    run_id = start(spec({"remind": "1s", "notify": hook_url(webhook)}), db)
    script = (
        "import json, sys\n"
        "from airun_nb.gates import followup\n"
        "from airun_nb.store.opening import open_store\n"
        "store = open_store(sys.argv[1])\n"
        "while True:\n"
        "    followup.sweep(store)\n"
        "    rows = store.gate_events(sys.argv[2], 'review', ('gate_reminded',))\n"
        "    if any(json.loads(r['detail'])['period'] >= 3 for r in rows):\n"
        "        break\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(db), run_id]) for _ in range(2)]
    for p in procs:
        assert p.wait(timeout=SAFETY) == 0
    periods = [e["detail"]["period"] for e in gate_events(db, run_id, "gate_reminded")]
    assert len(periods) == len(set(periods)), f"a period was reminded twice: {periods}"
    assert max(periods) >= 3
    sent = [r["reminder"] for r in webhook.received if r.get("event") == "reminder"]  # type: ignore[attr-defined]
    assert sorted(sent) == sorted(periods)


def test_escalation_adds_approvers_once_and_shows_them(
    db: Path, webhook: ThreadingHTTPServer
) -> None:
    """``escalate: {after: 1s, to: [carol]}``: carol may not decide before, may after; the
    gate's "may decide" line names her; the audit has one escalation row; the webhook hears of
    it once however many sweeps follow."""
    text = spec(
        {
            "approvers": ["bob"],
            "escalate": {"after": "1s", "to": "carol"},
            "notify": hook_url(webhook),
        }
    )
    run_id = start(text, db)
    with pytest.raises(ApprovalError, match="carol may not decide"):
        airun_nb.approve(run_id, "review", by="carol", db=db)
    sweep_until(db, lambda: bool(gate_events(db, run_id, "gate_escalated")))
    for _ in range(3):
        followup.sweep(Store.open(db))
    assert len(gate_events(db, run_id, "gate_escalated")) == 1
    row = Store.open(db).gate_row(run_id, "review")
    assert row is not None
    assert gate_mod.approver_list(row) == ["bob", "carol"]
    assert "escalated to carol" in gate_mod.who_may_decide(row)
    listed = subprocess.run(
        [*AIRUN, "approvals", "--db", str(db)], capture_output=True, text=True, timeout=120
    )
    assert "may decide: bob; carol (escalated to carol) (not" in listed.stdout, listed.stdout
    audit = airun_nb.audit(run_id, db=db)
    rows = audit[audit["kind"] == "escalation"].to_dict("records")
    assert len(rows) == 1 and json.loads(rows[0]["arguments"])["to"] == ["carol"]
    escalations = [r for r in webhook.received if r.get("event") == "escalation"]  # type: ignore[attr-defined]
    assert len(escalations) == 1
    assert escalations[0]["escalated_to"] == ["carol"]
    assert escalations[0]["message"] == "Escalated to carol: Pay out?"
    out = airun_nb.approve(run_id, "review", by="carol", db=db)
    assert out["decision"] == "approved" and out["by"] == ["carol"]


def test_escalation_survives_the_cell_running_again(db: Path) -> None:
    """An escalated gate keeps its added approvers when its cell runs again (the settings
    written in the cell apply; the escalation is not undone)."""
    text = spec({"approvers": ["bob"], "escalate": {"after": "1s", "to": "carol"}})
    run_id = start(text, db)
    sweep_until(db, lambda: bool(gate_events(db, run_id, "gate_escalated")))
    again = Workflow.from_yaml(text).run(db=db, resume=run_id, raise_on_failure=False)
    assert again.status == "waiting"
    row = Store.open(db).gate_row(run_id, "review")
    assert row is not None and gate_mod.approver_list(row) == ["bob", "carol"]


def test_bad_follow_up_settings_are_one_line(db: Path) -> None:
    """A reminder period or an escalation that makes no sense is refused when parsed."""
    with pytest.raises(SpecError, match="'remind' is at least 1s"):
        Workflow.from_yaml(spec({"remind": "10ms"}))
    with pytest.raises(SpecError, match="'escalate' is"):
        Workflow.from_yaml(spec({"escalate": "1h"}))
    with pytest.raises(SpecError, match=r"escalate\.to"):
        Workflow.from_yaml(spec({"escalate": {"after": "1h"}}))
    with pytest.raises(SpecError):
        Workflow.from_yaml(spec({"remind": "soon"}))


def test_doctor_repair_sends_due_follow_ups(db: Path, webhook: ThreadingHTTPServer) -> None:
    """``airun doctor --repair`` is a watcher too: it sends a due reminder and says so."""
    run_id = start(spec({"remind": "1s", "notify": hook_url(webhook)}), db)
    store = Store.open(db)
    row = store.gate_row(run_id, "review")
    assert row is not None
    wait_clock(store, gate_mod._epoch(row["opened_at"]) + 1.0)
    store.release()
    done = subprocess.run(
        [*AIRUN, "doctor", "--repair", "--db", str(db)], capture_output=True, text=True
    )
    assert "reminder" in done.stdout, done.stdout + done.stderr
    assert gate_events(db, run_id, "gate_reminded")
    assert any(r.get("event") == "reminder" for r in webhook.received)  # type: ignore[attr-defined]


def test_the_kernel_showing_a_gate_sends_its_reminders(
    ipython: Any, db: Path, webhook: ThreadingHTTPServer
) -> None:
    """A ``%%workflow`` cell that stops at a gate with ``remind`` leaves the kernel watching it:
    with no other watcher, the reminder is recorded and posted from the kernel."""
    text = spec({"remind": "1s", "notify": hook_url(webhook)})
    ipython.run_line_magic("config", f"Workflow.db = '{db}'")
    ipython.run_cell_magic("workflow", "", text)
    run_id = str(airun_nb.runs(db=db)["run_id"].iloc[0])
    limit, tick = time.monotonic() + SAFETY, threading.Event()
    while not [
        e
        for e in gate_events(db, run_id, "notified")
        if (e["detail"] or {}).get("for") == "reminder"
    ]:
        assert time.monotonic() < limit, "the kernel never sent the reminder"
        tick.wait(0.2)  # a poll of the store
    assert gate_events(db, run_id, "gate_reminded")[0]["detail"]["period"] >= 1
    assert any(r.get("event") == "reminder" for r in webhook.received)  # type: ignore[attr-defined]
    airun_nb.approve(run_id, "review", db=db)
