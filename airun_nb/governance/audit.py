"""The audit trail: one append-only row for everything the runtime decides or does.

Policy decisions, human decisions, capability executions, undos and compensations each get a
row with the time, principal, run, step, capability, decision, risk, the arguments (secrets
redacted by key name and by value pattern, :mod:`airun_nb.store.redaction`) and a result
summary. Rows are journaled in the same write as the state change they describe, so they are
folded into DuckDB in the same transaction.
"""

from __future__ import annotations

import json
import time
from typing import Any

from airun_nb.store.redaction import (
    MIN_SECRET_LENGTH,
    REDACTED,
    forget_secrets,
    is_secret_key,
    redact,
    redact_json,
    redact_keys,
    redact_secrets,
    redact_text,
    register_secret,
    scrub,
)

__all__ = [
    "MIN_SECRET_LENGTH",
    "REDACTED",
    "forget_secrets",
    "is_secret_key",
    "redact",
    "redact_json",
    "redact_keys",
    "redact_secrets",
    "redact_text",
    "register_secret",
    "row",
    "scrub",
]


def row(
    *,
    kind: str,
    principal: str,
    run_id: str | None,
    step_id: str | None,
    capability: str | None,
    decision: str,
    risk: str | None = None,
    arguments: Any = None,
    result: str | None = None,
    undo_ref: str | None = None,
    rule: str | None = None,
) -> dict[str, Any]:
    """A journal record for one audit row."""
    args = None
    if arguments is not None:
        text = json.dumps(redact(arguments), default=str)
        args = text if len(text) <= 4000 else text[:3997] + "..."
    return {
        "t": "audit",
        "ts": time.time(),
        "kind": kind,
        "principal": principal,
        "run_id": run_id,
        "step_id": step_id,
        "capability": capability,
        "decision": decision,
        "risk": risk,
        "rule": rule,
        "arguments": args,
        "result": redact_json(result) if result else None,
        "undo_ref": undo_ref,
    }
