"""The audit trail: a row for every policy decision, human decision, capability execution, undo
and compensation; secrets redacted by key name and by value pattern, in ``airun_nb.audit()``
and in ``airun audit --format jsonl|csv``.

Real DuckDB stores and workspaces in ``tmp_path``, a real HTTP server on 127.0.0.1 for
``http.request``, ``airun`` run in subprocesses. Nothing is mocked.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import airun_nb
from airun_nb import Workflow, WorkflowFailed
from airun_nb.governance import policy as policy_mod
from airun_nb.governance.audit import redact
from airun_nb.store.database import Store
from support import AIRUN, ENV_VARS

COLUMNS = [
    "ts",
    "kind",
    "principal",
    "run_id",
    "step_id",
    "capability",
    "decision",
    "risk",
    "rule",
    "arguments",
    "result",
    "undo_ref",
    "copied_from",
]


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    root = tmp_path / "ws"
    root.mkdir()
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AIRUN_DB", str(tmp_path / "audit.duckdb"))
    monkeypatch.chdir(root)
    policy_mod.configure(None)
    yield root
    policy_mod.configure(None)


def airun(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*AIRUN, *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc


def rows_of(df: pd.DataFrame) -> list[tuple[Any, ...]]:
    """(kind, step_id, capability, decision) per row, NaN as None."""
    out = []
    for r in df.to_dict("records"):
        out.append(
            tuple(
                None if pd.isna(r[k]) else r[k]
                for k in ("kind", "step_id", "capability", "decision")
            )
        )
    return out


# -- completeness ----------------------------------------------------------------------------------
SAMPLE = """
name: audited
steps:
  - id: write
    capability: fs.write
    with: {path: report.txt, content: "v2"}
  - id: calc
    needs: [write]
    python: |
      ledger.append("calc")
      result = 42
    compensate:
      call: unledger
      with: {name: calc}
  - id: review
    needs: [calc]
    approval:
      message: "Publish the report?"
      approvers: [alice]
  - id: publish
    needs: [review]
    python: |
      raise RuntimeError("the publisher is down")
"""


def test_every_decision_execution_undo_and_compensation_has_a_row(
    ws: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pol = tmp_path / "policy.yaml"
    pol.write_text(
        "rules:\n  - {name: log-writes, principals: ['*'], capabilities: [fs.write], decision: allow}\n"
    )
    monkeypatch.setenv("AIRUN_POLICY", str(pol))
    monkeypatch.setenv("AIRUN_USER", "bob")
    (ws / "report.txt").write_text("v1")
    ledger: list[str] = []
    ns = {"ledger": ledger, "unledger": lambda name: ledger.remove(name)}
    wf = Workflow.from_yaml(SAMPLE)

    first = wf.run(namespace=ns)
    assert first.status == "waiting"
    airun_nb.approve(first.run_id, "review", by="alice", comment="ship it")
    with pytest.raises(WorkflowFailed, match="the publisher is down"):
        wf.run(namespace=ns)
    assert (ws / "report.txt").read_text() == "v1"
    assert ledger == []

    audit = airun_nb.audit()
    assert list(audit.columns) == COLUMNS
    assert rows_of(audit) == [
        ("policy", "write", "fs.write", "allow"),
        ("capability", "write", "fs.write", "executed"),
        ("policy", "calc", "python.exec", "allow"),
        ("step", "calc", "python.exec", "executed"),
        ("human", "review", "approval", "approve"),
        ("policy", "publish", "python.exec", "allow"),
        ("step", "publish", "python.exec", "failed"),
        ("compensation", "calc", "python.call", "done"),
        ("undo", "write", "fs.write.undo", "done"),
    ]
    assert set(audit["run_id"]) == {first.run_id}
    by = {(r["kind"], r["step_id"]): r for r in audit.to_dict("records")}
    assert by[("human", "review")]["principal"] == "alice"
    assert json.loads(by[("human", "review")]["arguments"]) == {
        "channel": "api",
        "comment": "ship it",
        "recorded_by": "bob",  # the identity that recorded alice's decision
    }
    others = audit[audit["kind"] != "human"]
    assert set(others["principal"]) == {"bob"}
    assert by[("policy", "write")]["rule"] == "log-writes"
    assert pd.isna(by[("policy", "calc")]["rule"])  # the default decided
    assert by[("policy", "write")]["risk"] == "medium"
    assert by[("policy", "calc")]["risk"] == "high"
    assert json.loads(by[("capability", "write")]["arguments"]) == {
        "path": "report.txt",
        "content": "v2",
    }
    assert json.loads(by[("capability", "write")]["result"]) == {"path": "report.txt", "bytes": 2}
    assert by[("capability", "write")]["undo_ref"].startswith(f"{first.run_id}/write/")
    assert "the publisher is down" in by[("step", "publish")]["result"]
    assert by[("undo", "write")]["undo_ref"].startswith(f"{first.run_id}/write/")
    assert json.loads(by[("compensation", "calc")]["arguments"]) == {"name": "calc"}
    assert "UTC" in str(audit["ts"].dtype)
    assert audit["ts"].is_monotonic_increasing


def test_policy_denials_and_inserted_gates_are_rows(
    ws: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pol = tmp_path / "policy.yaml"
    pol.write_text(
        textwrap.dedent(
            """
            roles: {lead: [alice], agent: [llm-bot]}
            rules:
              - {name: agents-no-code, principals: [role:agent], capabilities: [python.exec], decision: deny}
              - {name: mkdir-needs-ok, capabilities: [fs.mkdir], decision: require_approval, approvers: [role:lead]}
            """
        )
    )
    monkeypatch.setenv("AIRUN_POLICY", str(pol))
    wf = Workflow.from_yaml(
        """
name: gated_and_denied
steps:
  - id: mk
    capability: fs.mkdir
    with: {path: out}
  - id: code
    needs: [mk]
    python: |
      result = 1
"""
    )
    r = wf.run(principal="llm-bot")
    assert r.status == "waiting"
    airun_nb.approve(r.run_id, "mk.approval", by="alice")
    with pytest.raises(WorkflowFailed, match="denied by the policy"):
        wf.run(principal="llm-bot")
    audit = airun_nb.audit(r.run_id)
    assert rows_of(audit) == [
        ("policy", "mk", "fs.mkdir", "require_approval"),
        ("human", "mk.approval", "approval", "approve"),
        ("policy", "mk", "fs.mkdir", "require_approval"),  # checked again on resume
        ("capability", "mk", "fs.mkdir", "executed"),
        ("policy", "code", "python.exec", "deny"),
        ("undo", "mk", "fs.mkdir.undo", "done"),
    ]
    rules = audit[audit["kind"] == "policy"]["rule"].tolist()
    assert rules == ["mkdir-needs-ok", "mkdir-needs-ok", "agents-no-code"]
    assert audit[audit["kind"] == "human"]["principal"].tolist() == ["alice"]


def test_decisions_by_policy_and_by_timeout_are_rows(
    ws: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRUN_APPROVAL", "approve")
    r = Workflow.from_yaml(
        """
name: headless
steps:
  - id: ok
    approval: {message: fine?}
"""
    ).run()
    assert r.status == "completed"
    monkeypatch.delenv("AIRUN_APPROVAL")
    t = Workflow.from_yaml(
        """
name: timed
steps:
  - id: late
    approval: {message: anyone?, timeout: 50ms, on_timeout: reject, mode: wait}
"""
    ).run(raise_on_failure=False)
    assert t.status == "rolled_back"
    audit = airun_nb.audit()
    assert rows_of(audit) == [
        ("policy", "ok", "approval", "approve"),
        ("timeout", "late", "approval", "reject"),
    ]
    assert audit["principal"].tolist() == ["policy:AIRUN_APPROVAL", "timeout"]


def test_without_a_policy_there_are_no_policy_rows(ws: Path) -> None:
    r = Workflow.from_yaml(
        """
name: unpoliced
steps:
  - id: w
    capability: fs.write
    with: {path: a.txt, content: x}
  - id: py
    needs: [w]
    python: |
      result = 1
"""
    ).run()
    assert rows_of(airun_nb.audit(r.run_id)) == [
        ("capability", "w", "fs.write", "executed"),
        ("step", "py", "python.exec", "executed"),
    ]


def test_a_refused_approval_attempt_adds_no_decision_row(ws: Path) -> None:
    r = Workflow.from_yaml(
        """
name: refused
steps:
  - id: gate
    approval: {approvers: [alice]}
"""
    ).run(user="bob")
    with pytest.raises(airun_nb.ApprovalError):
        airun_nb.approve(r.run_id, "gate", by="mallory")
    assert airun_nb.audit(r.run_id).empty


# -- redaction --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "secret"),
    [
        ({"password": "hunter2"}, "hunter2"),
        ({"db_passwd": "pw1234"}, "pw1234"),
        ({"api_key": "k-123456"}, "k-123456"),
        ({"apiKey": "k-abcdef"}, "k-abcdef"),
        ({"client_secret": "cs-99"}, "cs-99"),
        ({"credentials": "user:cred-plural"}, "cred-plural"),
        ({"access_token": "at-777"}, "at-777"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "dXNlcjpwYXNz"),
        ({"headers": {"X-Api-Key": "hdr-key-1"}}, "hdr-key-1"),
        ({"nested": [{"token": "deep-tok"}]}, "deep-tok"),
        ({"url": "https://user:pw-in-url@host/x"}, "pw-in-url"),
        ({"url": "https://host/x?a=1&token=abc-query&b=2"}, "abc-query"),
        ({"url": "https://host/x?api_key=qk-1"}, "qk-1"),
        ({"note": "send Bearer eyAbCdEf12345678 now"}, "eyAbCdEf12345678"),
        (
            {"note": "ghp_ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"},
            "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
        ),
        ({"note": "aws AKIAIOSFODNN7EXAMPLE here"}, "AKIAIOSFODNN7EXAMPLE"),
        ({"note": "openai sk-proj-abcdefghijklmnopqrst"}, "abcdefghijklmnopqrst"),
        (["https://u:p4ss-word@h.example/"], "p4ss-word"),
    ],
)
def test_redact_by_key_and_by_value(value: Any, secret: str) -> None:
    out = json.dumps(redact(value))
    assert secret not in out
    assert "***" in out


def test_redact_keeps_what_is_not_secret() -> None:
    value = {
        "path": "reports/q3.txt",
        "url": "https://user:pw@host.example/x?page=2&token=abc",
        "count": 3,
        "keyboard": "qwerty",
        "monkey": "banana",
    }
    out = redact(value)
    assert out["path"] == "reports/q3.txt"
    assert out["count"] == 3
    assert out["keyboard"] == "qwerty" and out["monkey"] == "banana"
    assert out["url"] == "https://user:***@host.example/x?page=2&token=***"


class Quiet(BaseHTTPRequestHandler):
    """Answers every request; 500 under /fail. Never echoes what it received."""

    def _answer(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        code = 500 if self.path.startswith("/fail") else 200
        body = b'{"ok": true}'
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()
    t.join(5)


SECRETS = {
    "api_token": "tokSECRETbykey0001",
    "password": "pwSECRETbykey0002",
    "url_password": "urlpwSECRET0003",
    "url_token": "qtokSECRET0004",
    "bearer": "bearerSECRET0005abcdef",
    "bearer_in_text": "textbearerSECRET0006",
    "github": "ghp_SECRET0007aaaaaaaaaaaa",
    "aws": "AKIASECRET0008XXXXXX",
    "openai": "sk-SECRET0009bbbbbbbbbbbbbbbb",
}
MARKERS = ["SECRET000", "SECRETbykey"]


def secret_wf(base: str) -> Workflow:
    s = SECRETS
    return Workflow.from_dict(
        {
            "name": "secrets",
            "steps": [
                {
                    "id": "deploy",
                    "capability": "test.audit.deploy",
                    "with": {
                        "api_token": s["api_token"],
                        "password": s["password"],
                        "endpoint": f"https://deployer:{s['url_password']}@host.example/x?token={s['url_token']}",
                        "headers": {"Authorization": f"Bearer {s['bearer']}"},
                        "note": f"retry with Bearer {s['bearer_in_text']} if needed",
                        "keys": [s["github"], s["aws"], s["openai"]],
                    },
                },
                {
                    "id": "call",
                    "needs": ["deploy"],
                    "capability": "http.request",
                    "with": {
                        "url": f"{base}/hook?token={s['url_token']}",
                        "method": "POST",
                        "json": {"event": "deployed"},
                        "headers": {"Authorization": f"Bearer {s['bearer']}"},
                    },
                },
                {
                    "id": "boom",
                    "needs": ["call"],
                    "python": "raise RuntimeError('later failure')",
                },
            ],
        }
    )


def _register_deploy() -> list[dict[str, Any]]:
    undone: list[dict[str, Any]] = []

    def deploy(**kw: Any) -> dict[str, Any]:
        return {"deployed": True, "endpoint": kw["endpoint"], "auth": kw["headers"]}

    def undeploy(**kw: Any) -> None:
        undone.append(kw)

    airun_nb.register_capability("test.audit.deploy", deploy, risk="high", undo=undeploy)
    return undone


def assert_no_secret(text: str, where: str) -> None:
    for marker in MARKERS:
        assert marker not in text, f"a secret ({marker}...) leaked into {where}"
    for value in SECRETS.values():
        assert value not in text, f"secret {value!r} leaked into {where}"


def test_secrets_never_reach_the_audit_table_or_its_exports(
    ws: Path, tmp_path: Path, server: str
) -> None:
    undone = _register_deploy()
    r = secret_wf(server).run(raise_on_failure=False)
    assert r.status == "rolled_back"
    assert len(undone) == 1 and undone[0]["api_token"] == SECRETS["api_token"]  # undo had them

    audit = airun_nb.audit()
    kinds = rows_of(audit)
    assert ("capability", "deploy", "test.audit.deploy", "executed") in kinds
    assert ("capability", "call", "http.request", "executed") in kinds
    assert ("undo", "deploy", "test.audit.deploy.undo", "done") in kinds
    assert_no_secret(audit.to_string(), "airun_nb.audit()")
    for col in audit.columns:
        assert_no_secret(" ".join(map(str, audit[col].tolist())), f"audit column {col}")

    deploy_args = json.loads(
        audit[(audit["kind"] == "capability") & (audit["step_id"] == "deploy")]["arguments"].iloc[0]
    )
    assert deploy_args["api_token"] == "***"
    assert deploy_args["password"] == "***"
    assert deploy_args["endpoint"] == "https://deployer:***@host.example/x?token=***"
    assert deploy_args["headers"] == {"Authorization": "***"}
    assert deploy_args["note"] == "retry with Bearer *** if needed"
    assert deploy_args["keys"] == ["***", "***", "***"]
    call_args = json.loads(
        audit[(audit["kind"] == "capability") & (audit["step_id"] == "call")]["arguments"].iloc[0]
    )
    assert call_args["url"].endswith("/hook?token=***")

    store = str(tmp_path / "audit.duckdb")
    jsonl = airun("audit", "--db", store, "--format", "jsonl", cwd=tmp_path).stdout
    records = [json.loads(line) for line in jsonl.splitlines()]
    assert len(records) == len(audit)
    assert [rec["kind"] for rec in records] == audit["kind"].tolist()
    assert_no_secret(jsonl, "airun audit --format jsonl")
    csv_text = airun("audit", "--db", store, "--format", "csv", cwd=tmp_path).stdout
    assert_no_secret(csv_text, "airun audit --format csv")


def test_secrets_of_a_request_without_undo_are_not_kept_in_clear_anywhere_in_the_store(
    ws: Path, tmp_path: Path, server: str
) -> None:
    """Secrets handed to ``http.request`` from notebook variables: nothing needs them later
    (no undo), so no table of the store may hold them in clear, even when the request fails."""
    wf = Workflow.from_yaml(
        """
name: leaky
on_failure: stop
steps:
  - id: ok
    capability: http.request
    with: {url: "{{ base }}/hook?token={{ tok }}", method: POST, headers: {Authorization: "{{ auth }}"}}
  - id: bad
    needs: [ok]
    capability: http.request
    with: {url: "{{ base }}/fail?token={{ tok }}", method: POST, headers: {Authorization: "{{ auth }}"}}
"""
    )
    ns = {"base": server, "tok": SECRETS["url_token"], "auth": f"Bearer {SECRETS['bearer']}"}
    with pytest.raises(WorkflowFailed) as exc:
        wf.run(namespace=ns)
    assert "answered 500" in str(exc.value)
    store = Store.open(tmp_path / "audit.duckdb")  # folds the journal in
    tables = store.query("SELECT table_schema, table_name FROM information_schema.tables")
    assert len(tables) > 5
    for schema, table in tables:
        text = " ".join(map(str, store.query(f'SELECT * FROM "{schema}"."{table}"')))
        for value in (SECRETS["url_token"], SECRETS["bearer"]):
            assert value not in text, f"secret {value!r} kept in clear in {schema}.{table}"


# -- airun audit ----------------------------------------------------------------------------------
def test_airun_audit_csv_jsonl_run_filter_and_output_file(
    ws: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pol = tmp_path / "policy.yaml"
    pol.write_text("rules:\n  - {name: no-shell, capabilities: [shell.run], decision: deny}\n")
    monkeypatch.setenv("AIRUN_POLICY", str(pol))
    wf = Workflow.from_yaml(
        """
name: exported
steps:
  - id: w
    capability: fs.write
    with: {path: a.txt, content: "x,y\\n\\"quoted\\""}
"""
    )
    one = wf.run()
    two = wf.run(new=True)
    store = str(tmp_path / "audit.duckdb")

    csv_text = airun("audit", "--db", store, "--format", "csv", cwd=tmp_path).stdout
    table = list(csv.DictReader(io.StringIO(csv_text)))
    assert list(table[0].keys()) == COLUMNS
    assert [(row["kind"], row["run_id"]) for row in table] == [
        ("policy", one.run_id),
        ("capability", one.run_id),
        ("policy", two.run_id),
        ("capability", two.run_id),
    ]
    args = json.loads(table[1]["arguments"])
    assert args == {"path": "a.txt", "content": 'x,y\n"quoted"'}  # survives CSV quoting

    only = airun("audit", "--db", store, "--run", two.run_id, cwd=tmp_path).stdout
    recs = [json.loads(line) for line in only.splitlines()]
    assert {rec["run_id"] for rec in recs} == {two.run_id}
    assert [rec["kind"] for rec in recs] == ["policy", "capability"]
    assert recs[0]["ts"].startswith("20")  # ISO timestamps

    out = tmp_path / "audit.jsonl"
    msg = airun("audit", "--db", store, "-o", str(out), cwd=tmp_path).stdout
    assert "wrote 4" in msg and str(out) in msg
    assert len(out.read_text().splitlines()) == 4


def test_airun_audit_on_an_empty_store(ws: Path, tmp_path: Path) -> None:
    Workflow.from_yaml("name: nothing\nsteps:\n  - id: a\n    approval: {}\n").run()
    store = str(tmp_path / "audit.duckdb")
    csv_text = airun("audit", "--db", store, "--format", "csv", cwd=tmp_path).stdout
    assert csv_text.strip().split(",") == COLUMNS
    assert airun("audit", "--db", store, cwd=tmp_path).stdout.strip() == ""
