"""The journal redactor's short cut (a record with nothing a pattern could match is written as
it is) never lets through what the full redaction would catch: escapes in JSON, odd case,
credentials in nested attempt records."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from airun_nb.governance import audit as auditlog


@contextmanager
def _full_path() -> Iterator[None]:
    """A registered secret value turns the short cut off: every record takes the full path."""
    auditlog.register_secret("zz-never-in-any-record-zz")
    try:
        yield
    finally:
        auditlog.forget_secrets()


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        try:
            return bool(json.loads(a) == json.loads(b))
        except ValueError:
            return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


RECORDS: list[dict[str, Any]] = [
    {"t": "step", "step_id": "a", "reason": "not run yet", "error": None},
    {"t": "step", "error": "boom at https://bob:hunter2@db.example/x"},
    {"t": "step", "error": "x", "att": {"error": "Authorization: Bearer abcdefghijklmnop"}},
    {"t": "step", "error": "x", "att": {"traceback": "tok ghp_abcdefghijklmnopqrstuv"}},
    {"t": "ev", "detail": json.dumps({"attempt": 1})},
    {"t": "ev", "detail": '{"p\\u0061ssword": "hunter2"}'},
    {"t": "ev", "detail": '{"url": "https:\\/\\/u:pw@h\\/"}'},
    {"t": "ev", "detail": json.dumps({"API_KEY": "abc"})},
    {"t": "ev", "detail": json.dumps({"note": "KEY=1 and AKIA0123456789ABCDEF"})},
    {"t": "ev", "detail": json.dumps({"\u212aey": "kelvin-sign key"})},
    {"t": "ev", "detail": "not json: ?token=abcdef"},
    {"t": "audit", "arguments": json.dumps({"path": "a.txt"}), "result": "wrote 3 bytes"},
    {"t": "audit", "arguments": json.dumps({"db_pwd": "x"}), "result": '{"sig": "s"}'},
    {"t": "gate", "comment": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.abc"},
    {"t": "run", "error": "SK-ABCDEFGHIJKLMNOPQRSTUV"},
]


@pytest.mark.parametrize("rec", RECORDS)
def test_the_short_cut_writes_what_the_full_redaction_writes(rec: dict[str, Any]) -> None:
    fast = auditlog.scrub(dict(rec))
    with _full_path():
        full = auditlog.scrub(dict(rec))
    assert _same(fast, full), (fast, full)


@pytest.mark.parametrize(
    "rec, secret",
    [
        ({"t": "ev", "detail": '{"p\\u0061ssword": "hunter2"}'}, "hunter2"),
        ({"t": "ev", "detail": '{"url": "https:\\/\\/u:pw@h\\/"}'}, "pw@"),
        ({"t": "step", "error": "x", "att": {"error": "Bearer abcdefghijklmnop"}}, "abcdefghijk"),
        ({"t": "audit", "arguments": json.dumps({"db_pwd": "s3cr3t"})}, "s3cr3t"),
    ],
)
def test_hidden_credentials_do_not_reach_the_journal(rec: dict[str, Any], secret: str) -> None:
    assert secret not in json.dumps(auditlog.scrub(rec))


def test_a_record_with_nothing_to_redact_is_passed_on_as_it_is() -> None:
    rec = {"t": "step", "reason": "not run yet", "att": {"error": None}}
    assert auditlog.scrub(rec) is rec
