"""The audit trail: one append-only row for everything the runtime decides or does.

Policy decisions, human decisions, capability executions, undos and compensations each get a
row with the time, principal, run, step, capability, decision, risk, the arguments (secrets
redacted by key name and by value pattern) and a result summary. Rows are journaled in the same
write as the state change they describe, so they are folded into DuckDB in the same transaction.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from typing import Any

REDACTED = "***"
_SECRET_KEYS = re.compile(
    r"(pass(word|wd)?|secret|token|api[_-]?key|apikey|auth(orization)?|credential|"
    r"private[_-]?key|session|cookie|signature|sig)s?$|^(key)$",
    re.IGNORECASE,
)
_VALUE_PATTERNS = [
    # credentials inside URLs: https://user:pass@host
    (re.compile(r"(?P<pre>[a-z][a-z0-9+.\-]*://[^/\s:@]+:)[^@\s/]+(?=@)", re.I), r"\g<pre>***"),
    # secret-looking query parameters
    (
        re.compile(
            r"(?P<pre>[?&](?:access_token|token|api_key|apikey|key|secret|password|sig|signature|"
            r"auth|code)=)[^&#\s]+",
            re.I,
        ),
        r"\g<pre>***",
    ),
    # bearer / basic authorization values
    (
        re.compile(r"(?P<pre>\b(?:Bearer|Basic|Token)\s+)[A-Za-z0-9._~+/=\-]{8,}", re.I),
        r"\g<pre>***",
    ),
    # well-known token shapes
    (re.compile(r"\b(?:ghp|gho|ghs|github_pat|glpat|xox[abpr])[-_][A-Za-z0-9_\-]{10,}"), REDACTED),
    (re.compile(r"\bAKIA[0-9A-Z]{16}\b"), REDACTED),
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{16,}"), REDACTED),
    (re.compile(r"\beyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]+"), REDACTED),
]


def redact(value: Any, key: str | None = None) -> Any:
    """A copy of ``value`` with secrets replaced by ``***``."""
    if key is not None and _SECRET_KEYS.search(key):
        return REDACTED
    if isinstance(value, Mapping):
        return {str(k): redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if isinstance(value, str):
        for pattern, repl in _VALUE_PATTERNS:
            value = pattern.sub(repl, value)
        return value
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    return redact(repr(value))


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
        "result": redact(result) if result else None,
        "undo_ref": undo_ref,
    }
