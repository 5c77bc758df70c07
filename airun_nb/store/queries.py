"""The store's reads, by name: every question the engine, the gates and the front ends ask of the
store's tables.

Nothing outside :mod:`airun_nb.store` (and the analytic SQL of :mod:`airun_nb.history`) writes
SQL on the store's tables: it calls one of these. A second backend implements the same names,
so the engine and the front ends do not know which database holds the runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# A run that has not reached an end state (resumable, or being rolled back).
UNFINISHED = (
    "interrupted",
    "failed",
    "running",
    "waiting",
    "pending",
    "rolling_back",
    "rollback_failed",
)


class Queries:
    """Named reads over the store's tables; mixed into the store handle."""

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def query_dicts(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        raise NotImplementedError

    # -- runs -----------------------------------------------------------------------------------
    def run_row(self, run_id: str) -> dict[str, Any] | None:
        """The run's row, or ``None`` when the store has no such run."""
        rows = self.query_dicts("SELECT * FROM runs WHERE run_id = ?", [run_id])
        return rows[0] if rows else None

    def has_run(self, run_id: str) -> bool:
        return bool(self.query("SELECT 1 FROM runs WHERE run_id = ?", [run_id]))

    def runs_with_status(self, *statuses: str) -> list[dict[str, Any]]:
        marks = ", ".join("?" for _ in statuses)
        return self.query_dicts(
            f"SELECT * FROM runs WHERE status IN ({marks}) ORDER BY created_at", list(statuses)
        )

    def latest_unfinished_run(self) -> str | None:
        """The newest run that has not reached an end state."""
        marks = ", ".join("?" for _ in UNFINISHED)
        rows = self.query(
            f"SELECT run_id FROM runs WHERE status IN ({marks}) ORDER BY created_at DESC LIMIT 1",
            list(UNFINISHED),
        )
        return str(rows[0][0]) if rows else None

    def latest_failed_run(self) -> str | None:
        """The run of the newest attempt that failed with a traceback."""
        rows = self.query(
            "SELECT run_id FROM attempts WHERE traceback IS NOT NULL "
            "ORDER BY started_at DESC LIMIT 1"
        )
        return str(rows[0][0]) if rows else None

    def runs_touched_since(self, since: Any) -> list[dict[str, Any]]:
        """Runs created or changed at or after ``since`` (a naive UTC datetime), oldest first:
        ``run_id``, ``resumed`` (created before: a run that was resumed), ``status`` and
        ``failed_step``."""
        return self.query_dicts(
            "SELECT run_id, created_at < ? AS resumed, status, failed_step FROM runs "
            "WHERE created_at >= ? OR updated_at >= ? ORDER BY created_at",
            [since, since, since],
        )

    def waiting_runs_with_every_gate_decided(self) -> list[str]:
        """Waiting runs none of whose gates is still open: decided, but nobody continued them."""
        rows = self.query(
            "SELECT r.run_id FROM runs r JOIN approvals a USING (run_id) "
            "WHERE r.status = 'waiting' GROUP BY r.run_id, r.created_at "
            "HAVING bool_and(a.status <> 'open') ORDER BY r.created_at"
        )
        return [str(r[0]) for r in rows]

    def latest_run_of_source(self, source: str | None) -> str | None:
        """The newest run started from this notebook (``source``)."""
        rows = self.query(
            "SELECT run_id FROM runs WHERE source IS NOT DISTINCT FROM ? "
            "ORDER BY created_at DESC, run_id DESC LIMIT 1",
            [source],
        )
        return str(rows[0][0]) if rows else None

    def stored_definition(self, run_id: str) -> tuple[str, str | None] | None:
        """``(workflow name, workflow text)`` of a run, or ``None`` when there is no such run."""
        rows = self.query(
            "SELECT r.workflow, s.text FROM runs r LEFT JOIN specs s USING (spec_hash) "
            "WHERE r.run_id = ?",
            [run_id],
        )
        return (str(rows[0][0]), rows[0][1]) if rows else None

    def spec_rows(self, spec_hash: str) -> list[dict[str, Any]]:
        return self.query_dicts("SELECT * FROM specs WHERE spec_hash = ?", [spec_hash])

    # -- steps and attempts ---------------------------------------------------------------------
    def step_rows(self, run_id: str, *statuses: str) -> list[dict[str, Any]]:
        """A run's step rows in step order (only those in ``statuses`` when given)."""
        if not statuses:
            return self.query_dicts(
                "SELECT * FROM steps WHERE run_id = ? ORDER BY position", [run_id]
            )
        marks = ", ".join("?" for _ in statuses)
        return self.query_dicts(
            f"SELECT * FROM steps WHERE run_id = ? AND status IN ({marks}) ORDER BY position",
            [run_id, *statuses],
        )

    def tracebacks(self, run_id: str) -> dict[str, str]:
        """The traceback of each step's last failed attempt."""
        return {
            str(step): str(tb)
            for step, tb in self.query(
                "SELECT step_id, traceback FROM attempts WHERE run_id = ? "
                "AND traceback IS NOT NULL ORDER BY started_at",
                [run_id],
            )
        }

    def output_blob(self, run_id: str, step_id: str) -> bytes | None:
        rows = self.query(
            "SELECT output_blob FROM steps WHERE run_id = ? AND step_id = ?", [run_id, step_id]
        )
        return rows[0][0] if rows else None

    def running_attempts(self, run_id: str) -> list[dict[str, Any]]:
        return self.query_dicts(
            "SELECT * FROM attempts WHERE run_id = ? AND status = 'running'", [run_id]
        )

    def orphan_counts(self) -> dict[str, int]:
        """Rows that lost their parent: steps without a run, attempts without a step."""
        steps = self.query(
            "SELECT count(*) FROM steps s WHERE NOT EXISTS "
            "(SELECT 1 FROM runs r WHERE r.run_id = s.run_id)"
        )[0][0]
        attempts = self.query(
            "SELECT count(*) FROM attempts a WHERE NOT EXISTS "
            "(SELECT 1 FROM steps s WHERE s.run_id = a.run_id AND s.step_id = a.step_id)"
        )[0][0]
        return {"step rows without a run": int(steps), "attempts without a step": int(attempts)}

    # -- gates ----------------------------------------------------------------------------------
    def gate_row(self, run_id: str, gate_id: str) -> dict[str, Any] | None:
        rows = self.query_dicts(
            "SELECT * FROM approvals WHERE run_id = ? AND gate_id = ?", [run_id, gate_id]
        )
        return rows[0] if rows else None

    def open_gates(self, run_id: str | None = None) -> list[dict[str, Any]]:
        """Open gates (of one run, or of every run with the run's creation time), oldest
        first."""
        if run_id is not None:
            return self.query_dicts(
                "SELECT * FROM approvals WHERE run_id = ? AND status = 'open' ORDER BY opened_at",
                [run_id],
            )
        return self.query_dicts(
            "SELECT a.*, r.created_at AS run_created_at FROM approvals a "
            "JOIN runs r USING (run_id) WHERE a.status = 'open' ORDER BY a.opened_at"
        )

    def decided_gates(self, keys: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
        """The rows of those ``(run_id, gate_id)`` gates that are no longer open."""
        if not keys:
            return []
        return self.query_dicts(
            "SELECT * FROM approvals WHERE status <> 'open' AND (run_id, gate_id) IN "
            f"({', '.join('(?, ?)' for _ in keys)})",
            [v for k in keys for v in k],
        )

    # -- events ---------------------------------------------------------------------------------
    def events_after(self, seq: int, run_id: str | None, limit: int) -> list[dict[str, Any]]:
        """Events after the store-assigned sequence number ``seq`` (of one run, when given), in
        store order: the event stream's cursor."""
        clause, params = ("AND run_id = ?", [run_id]) if run_id else ("", [])
        return self.query_dicts(
            f"""SELECT seq, ts, run_id, step_id, kind, detail FROM events
                WHERE seq > ? {clause} ORDER BY seq LIMIT {int(limit)}""",
            [seq, *params],
        )

    def gate_events(self, run_id: str, gate_id: str, kinds: Sequence[str]) -> list[dict[str, Any]]:
        """Events of one gate of the given kinds, in store order (its reminders, escalation)."""
        if not kinds:
            return []
        return self.query_dicts(
            "SELECT seq, ts, kind, detail FROM events WHERE run_id = ? AND step_id = ? AND kind IN "
            f"({', '.join('?' for _ in kinds)}) ORDER BY seq",
            [run_id, gate_id, *kinds],
        )

    def open_gate_events(self, kinds: Sequence[str]) -> list[dict[str, Any]]:
        """Events of the given kinds of every open gate, in store order (their follow-ups)."""
        if not kinds:
            return []
        return self.query_dicts(
            "SELECT e.run_id, e.step_id, e.kind, e.detail FROM events e JOIN approvals a "
            "ON a.run_id = e.run_id AND a.gate_id = e.step_id WHERE a.status = 'open' "
            f"AND e.kind IN ({', '.join('?' for _ in kinds)}) ORDER BY e.seq",
            list(kinds),
        )

    def events_of_kind(self, kind: str) -> list[dict[str, Any]]:
        """Every event of one kind, in store order (delegations, for instance)."""
        return self.query_dicts(
            "SELECT seq, ts, run_id, step_id, kind, detail FROM events WHERE kind = ? ORDER BY seq",
            [kind],
        )

    def event_cursor(self, since: Any = None) -> int:
        """The sequence number a new event stream starts after: the last event now, or the one
        before the first event stamped ``since`` or later."""
        if since is None:
            rows = self.query("SELECT coalesce(max(seq), 0) FROM events")
        else:
            rows = self.query(
                "SELECT coalesce((SELECT min(seq) FROM events WHERE ts >= ?), "
                "(SELECT coalesce(max(seq), 0) FROM events) + 1) - 1",
                [since],
            )
        return int(rows[0][0]) if rows else 0

    # -- tokens of the approval service ---------------------------------------------------------
    def live_tokens_of(self, who: str) -> list[dict[str, Any]]:
        """Unrevoked tokens whose id or user is ``who``."""
        return self.query_dicts(
            "SELECT * FROM tokens WHERE (token_id = ? OR user_name = ?) AND revoked_at IS NULL",
            [who, who],
        )

    def token_listing(self) -> list[dict[str, Any]]:
        return self.query_dicts(
            "SELECT token_id, user_name, role, created_at, created_by, revoked_at FROM tokens "
            "ORDER BY created_at"
        )

    def token_row(self, token_id: str) -> dict[str, Any] | None:
        rows = self.query_dicts("SELECT * FROM tokens WHERE token_id = ?", [token_id])
        return rows[0] if rows else None
