"""Secrets: the ``secrets`` namespace, redaction by value and by key everywhere the runtime
writes or shows text, and the warning for literal secrets in ``with:``."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Thread

import pytest
from sec_support import World

import airun_nb
from airun_nb import Workflow
from airun_nb.governance import audit as auditlog
from airun_nb.governance.secrets import SecretWarning

TOKEN = "tok-9f8e7d6c5b4a-very-secret"


def test_a_secret_from_the_environment_is_used_and_written_nowhere(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("API_TOKEN", TOKEN)
    monkeypatch.setenv("AIRUN_SECRETS", "API_TOKEN")
    wf = Workflow.from_yaml(
        """
name: uses_secret
steps:
  - id: write
    capability: fs.write
    with: {path: out.txt, content: "token={{ secrets.API_TOKEN }}", note: "{{ secrets.API_TOKEN }}"}
  - id: echo
    needs: [write]
    capability: shell.run
    with: {command: [cat, out.txt]}
"""
    )
    wf.run()
    assert (world.root / "out.txt").read_text() == f"token={TOKEN}"  # the effect has it
    world.assert_absent(TOKEN)  # the stored rows (the echo's output too) do not
    from airun_nb.store.database import Store

    store = Store.open(world.store)
    (out,) = store.query("SELECT output_json FROM steps WHERE step_id = 'echo'")[0]
    store.release()
    assert "***" in out and TOKEN not in out  # the rendered "token=..." is redacted whole


def test_a_secret_from_a_dotenv_file(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRUN_SECRETS", "DB_PASSWORD")
    (world.root / ".env").write_text(f"DB_PASSWORD={TOKEN}\n")
    Workflow.from_yaml(
        "name: dotenv\nsteps:\n  - id: w\n    capability: fs.write\n"
        "    with: {path: pw.txt, content: '{{ secrets.DB_PASSWORD }}'}\n"
    ).run()
    assert (world.root / "pw.txt").read_text() == TOKEN
    world.assert_absent(TOKEN)


def test_a_missing_secret_is_an_error_naming_the_step(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRUN_SECRETS", "NOT_SET_ANYWHERE")
    r = Workflow.from_yaml(
        "name: nosecret\nsteps:\n  - id: w\n    capability: fs.write\n"
        "    with: {path: x.txt, content: '{{ secrets.NOT_SET_ANYWHERE }}'}\n"
    ).run(raise_on_failure=False)
    assert "step 'w', field 'with.content'" in str(r.error)
    assert "NOT_SET_ANYWHERE" in str(r.error)
    assert not (world.root / "x.txt").exists()


def test_a_token_in_stderr_is_redacted_in_the_error_steps_events_and_attempts(
    world: World,
) -> None:
    ghp = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2"
    r = Workflow.from_yaml(
        "name: leaky\nsteps:\n  - id: sh\n    capability: shell.run\n"
        f"    with: {{command: 'echo auth failed for {ghp} >&2; exit 2'}}\n"
    ).run(raise_on_failure=False)
    assert ghp not in str(r.error) and "***" in str(r.error)
    for frame in (airun_nb.steps(r.run_id), airun_nb.events(r.run_id), airun_nb.attempts(r.run_id)):
        assert ghp not in frame.to_string()
    store_text = repr(airun_nb.audit(r.run_id).to_dict("records"))
    assert ghp not in store_text.replace(f"echo auth failed for {ghp}", "")


@pytest.mark.parametrize(
    "key", ["secret_key", "aws_secret_access_key", "passphrase", "pwd", "token", "password"]
)
def test_secret_named_keys_are_redacted_in_the_audit_arguments_and_result(
    world: World, key: str
) -> None:
    value = "hunter2-" + key

    def echo(**kwargs: object) -> dict[str, object]:
        return dict(kwargs)  # a capability that echoes its arguments back

    airun_nb.register_capability(f"test.echo.{key}", echo, risk="low")
    Workflow.from_yaml(
        f"name: echo\nsteps:\n  - id: e\n    capability: test.echo.{key}\n"
        f"    with: {{{key}: {value}, user: ada}}\n"
    ).run()
    audit = airun_nb.audit()
    row = audit[audit["step_id"] == "e"].iloc[-1]
    assert value not in str(row["arguments"]) and value not in str(row["result"])
    assert "ada" in str(row["result"])


@pytest.fixture
def server() -> Iterator[str]:
    class H(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *a: object) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/"
    srv.shutdown()


def test_a_policy_gate_preview_hides_authorization_and_passwords(
    world: World, monkeypatch: pytest.MonkeyPatch, server: str
) -> None:
    policy = world.root.parent / "ask.yaml"
    policy.write_text(
        "rules:\n  - {name: ask-http, capabilities: [http.request], decision: require_approval,"
        " approvers: [lena]}\n"
    )
    monkeypatch.setenv("AIRUN_POLICY", str(policy))
    monkeypatch.setenv("BEARER", "abcdefgh12345678zz")
    monkeypatch.setenv("AIRUN_SECRETS", "BEARER")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecretWarning)
        wf = Workflow.from_yaml(
            f"""
name: post
steps:
  - id: call
    capability: http.request
    with:
      url: {server}
      method: POST
      headers: {{Authorization: "Bearer {{{{ secrets.BEARER }}}}"}}
      json: {{password: pa55w0rd-literal, user: ada}}
"""
        )
    r = wf.run(raise_on_failure=False)
    assert r.status == "waiting"
    from airun_nb.store.database import Store

    store = Store.open(world.store)
    row = store.query_dicts("SELECT * FROM approvals WHERE run_id = ?", [r.run_id])[0]
    store.release()
    preview = str(row["preview_text"]) + str(row["preview_html"])
    assert "abcdefgh12345678zz" not in preview and "pa55w0rd-literal" not in preview
    assert "ada" in preview
    world.assert_absent("abcdefgh12345678zz")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("password", "hunter2hunter2"),
        ("api_key", "k-1234567890"),
        ("headers", {"Authorization": "Bearer abcdefghijklmnop"}),
        ("url", "https://user:pa55word@example.com/x"),
        ("token", "ghp_abcdefghijklmnop1234"),
    ],
)
def test_a_literal_secret_in_with_warns_at_parse_time(
    world: World, key: str, value: object
) -> None:
    import json

    with pytest.warns(SecretWarning) as caught:
        Workflow.from_yaml(
            "name: literal\nsteps:\n  - id: s\n    capability: fs.write\n"
            f"    with: {{path: a.txt, content: x, {key}: {json.dumps(value)}}}\n"
        )
    text = str(caught[0].message)
    assert f"step 's', with.{key}" in text and "secrets." in text


def test_no_warning_for_a_secret_reference(world: World) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", SecretWarning)
        Workflow.from_yaml(
            "name: ref\nsteps:\n  - id: s\n    capability: fs.write\n"
            "    with: {path: a.txt, content: x, password: '{{ secrets.PW }}'}\n"
        )


def test_redaction_by_value_reaches_nested_json_text() -> None:
    auditlog.forget_secrets()
    auditlog.register_secret("s3cr3t-value")
    rec = {"t": "step", "output_json": '{"a": ["s3cr3t-value", 1]}', "error": "x s3cr3t-value"}
    out = auditlog.scrub(rec)
    assert "s3cr3t-value" not in repr(out)
    auditlog.forget_secrets()
