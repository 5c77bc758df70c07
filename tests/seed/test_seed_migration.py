"""What a team moving from the AI-First Runtime runs into, file by file and habit by habit:
each old file, capability or script behaves as it did, or refuses in one line saying what to
change (`airun exec`, `airun convert`, `airun validate`, the old verbs, `airun rollback
--steps`)."""

from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

import airun_nb
from support.seed import SEED_DIALECT
from support.seedcli import airun, last_json

SEED = Path(__file__).parent
OLD = SEED / "oldrepo"  # files of the old repository (MIT, LICENSE beside them)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_converted_load_test_quick_takes_run_id_and_its_name(tmp_path: Path) -> None:
    """The converted load_test_quick writes the `--input run_id` it is given, as the original
    does, and both carry the file's `name:` (not the file name)."""
    conv = airun("convert", str(SEED_DIALECT / "load-test_load_test_quick.yaml"), cwd=tmp_path)
    converted = _write(tmp_path / "converted.yaml", conv.stdout)
    assert yaml.safe_load(conv.stdout)["name"] == "load_test_quick"
    for flow in (SEED_DIALECT / "load-test_load_test_quick.yaml", converted):
        out = airun("exec", str(flow), "--input", "run_id=R-42", "--json", cwd=tmp_path)
        assert out.returncode == 0, out.stdout + out.stderr
        assert last_json(out)["workflow"] == "load_test_quick"
        assert (tmp_path / "out.txt").read_text().startswith("run_id=R-42\n")
    wf = airun_nb.Workflow.from_file(converted)
    assert wf.name == "load_test_quick"


def test_converted_customer_onboarding_runs_like_the_original(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The converted customer onboarding is not refused over `account_id` (the output of a
    registered capability): both forms give every step the same inputs."""
    conv = airun("convert", str(SEED_DIALECT / "v3_customer_onboarding.yaml"), cwd=tmp_path)
    assert conv.returncode == 0, conv.stderr
    seen: dict[str, list[dict[str, Any]]] = {}

    def recorder(name: str, result: dict[str, Any]) -> Any:
        def fn(**kwargs: Any) -> dict[str, Any]:
            seen.setdefault(name, []).append(kwargs)
            return dict(result)

        return fn

    caps = {
        "crm.create_account": {"account_id": "A-1"},
        "crm.delete_account": {},
        "cloud.provision_tenant": {"tenant_id": "T-1"},
        "cloud.deprovision_tenant": {},
        "email.send": {"sent": True},
        "audit.create_record": {"record_id": "R-1"},
    }
    for name, result in caps.items():
        airun_nb.register_capability(name, recorder(name, result))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AIRUN_WORKSPACE", raising=False)
    forms = {
        "original": airun_nb.Workflow.from_file(SEED_DIALECT / "v3_customer_onboarding.yaml"),
        "converted": airun_nb.Workflow.from_yaml(conv.stdout),
    }
    inputs = {}
    for label, wf in forms.items():
        seen.clear()
        first = wf.run(db=tmp_path / f"{label}.duckdb", new=True)
        assert first.status == "waiting", (label, first.error)
        inputs[label] = json.loads(json.dumps(seen))
    assert inputs["original"] == inputs["converted"]
    assert inputs["original"]["cloud.provision_tenant"][0]["account_id"] == "A-1"


def test_a_dict_in_text_is_json(tmp_path: Path) -> None:
    """A mapping or list written into text renders as JSON (the deep-research report's JSON
    block), in both dialects."""
    flow = _write(
        tmp_path / "j.yaml",
        "workflow_id: j\nname: j\nsteps:\n"
        "  - name: calc\n    capability_name: math.pandas.calculate\n"
        "    inputs:\n      data: [{revenue: 100.0}, {revenue: 120.0}]\n"
        "      operations: [{type: sum, column: revenue, output_column: revenue_sum}]\n"
        "  - name: save\n    capability_name: io.fs.write_file\n    depends_on: [calc]\n"
        '    inputs: {path: r.md, content: "```json\\n{{calculated_metrics}}\\n```"}\n',
    )
    out = airun("exec", str(flow), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    block = (tmp_path / "r.md").read_text().split("\n")[1]
    assert json.loads(block) == {"revenue_sum": 220.0}


def test_inputs_are_text_unless_the_file_types_them(tmp_path: Path) -> None:
    """`--input` values stay the text typed (NO 1.10 007 on), unless the param's value in the
    file is a number; a param the file does not list is taken (the old chaos test's
    `out_path`); a value that does not fit a typed param is one line, exit 10."""
    flow = _write(
        tmp_path / "t.yaml",
        "workflow_id: t\nname: t\ninitial_state: {a: '', n: 1}\nsteps:\n"
        "  - name: w\n    capability_name: io.fs.write_file\n"
        "    inputs: {path: '{{out_path}}', content: '{{a}}|{{b}}|{{c}}|{{d}}|{{n}}'}\n",
    )
    out = airun(
        "exec", str(flow), *("-i", "a=NO", "-i", "b=1.10", "-i", "c=007", "-i", "d=on"),
        *("-i", "n=7", "-i", "out_path=o.txt"), cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "o.txt").read_text() == "NO|1.10|007|on|7"
    bad = airun("exec", str(flow), "-i", "n=seven", "-i", "out_path=p.txt", cwd=tmp_path)
    assert bad.returncode == 10
    assert bad.stderr.strip().splitlines() == [
        "error: --input n='seven': n is a number in the workflow file"
    ]


def test_template_render_uses_its_own_variables(tmp_path: Path) -> None:
    """text.template.render fills a name from its `variables` (the workflow leaves it)."""
    flow = _write(
        tmp_path / "r.yaml",
        "workflow_id: r\nname: r\nsteps:\n"
        "  - name: render\n    capability_name: text.template.render\n"
        "    inputs: {template: 'Hello {{who}}', variables: {who: world}}\n"
        "  - name: save\n    capability_name: io.fs.write_file\n    depends_on: [render]\n"
        "    inputs: {path: h.txt, content: '{{rendered}}'}\n",
    )
    out = airun("exec", str(flow), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "h.txt").read_text() == "Hello world"


def test_an_undefined_name_stays_text_like_timestamp(tmp_path: Path) -> None:
    """The real financial_report.yaml is not refused over `{{timestamp}}`; a name nothing
    defines is written as it stands, as the old runtime did (`airun validate` warns)."""
    plan = airun(
        "validate", str(SEED_DIALECT / "financial-analyst_financial_report.yaml"), cwd=tmp_path
    )
    assert plan.returncode == 0 and "name 'timestamp' is undefined" in plan.stdout
    flow = _write(
        tmp_path / "ts.yaml",
        "workflow_id: ts\nname: ts\nsteps:\n  - name: w\n    capability_name: io.fs.write_file\n"
        "    inputs: {path: ts.txt, content: 'Generated on: {{timestamp}}'}\n",
    )
    out = airun("exec", str(flow), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "ts.txt").read_text() == "Generated on: {{timestamp}}"


def test_a_failed_rolled_back_run_exits_20(tmp_path: Path) -> None:
    """A step failure that rolls the run back exits 20, like the old bridge, and the written
    file is gone; a completed run exits 0."""
    flow = _write(
        tmp_path / "f.yaml",
        "workflow_id: f\nname: f\nsteps:\n"
        "  - {name: w, capability_name: io.fs.write_file, inputs: {path: w.txt, content: x}}\n"
        "  - {name: h, capability_name: io.fs.hash_file, depends_on: [w], max_retries: 0,\n"
        "     inputs: {path: missing.txt}}\nenable_auto_rollback: true\n",
    )
    out = airun("exec", str(flow), "--json", cwd=tmp_path)
    assert out.returncode == 20 and last_json(out)["status"] == "rolled_back"
    assert not (tmp_path / "w.txt").exists()


def test_initial_state_does_not_shadow_a_step_output(tmp_path: Path) -> None:
    """An output replaces an initial_state value of the same name for the steps after it."""
    flow = _write(
        tmp_path / "s.yaml",
        "workflow_id: s\nname: s\ninitial_state: {rendered: initial}\nsteps:\n"
        "  - name: render\n    capability_name: text.template.render\n"
        "    inputs: {template: from-step, variables: {}}\n"
        "  - name: save\n    capability_name: io.fs.write_file\n    depends_on: [render]\n"
        "    inputs: {path: s.txt, content: '{{rendered}}'}\n",
    )
    out = airun("exec", str(flow), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "s.txt").read_text() == "from-step"
    conv = airun("convert", str(flow), cwd=tmp_path)
    assert "{{ steps.render.rendered }}" in conv.stdout


class _Hook(http.server.BaseHTTPRequestHandler):
    bodies: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        size = int(self.headers.get("Content-Length", 0))
        _Hook.bodies.append(json.loads(self.rfile.read(size)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hook() -> Any:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    _Hook.bodies = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()
    server.server_close()


def test_old_gate_inputs_and_the_approval_webhook(tmp_path: Path, hook: str) -> None:
    """The old guide's gate inputs load (`webhook_url` is POSTed to, `context` is shown to the
    approver, `webhook_payload`'s fields join the body), and `AI_FIRST_APPROVAL_WEBHOOK` gets a POST for a
    gate without a webhook of its own."""
    flow = _write(
        tmp_path / "g.yaml",
        "workflow_id: g\nname: g\ninitial_state: {app_version: '1.2'}\nsteps:\n"
        "  - name: approval_with_webhook\n    step_type: HUMAN_APPROVAL\n"
        "    capability: human.approve\n    inputs:\n"
        "      message: 'Delete production database?'\n"
        f"      webhook_url: '{hook}'\n"
        "      webhook_payload: {channel: '#ops'}\n"
        "      context: {version: '{{app_version}}', environment: production}\n",
    )
    out = airun("exec", str(flow), "--json", cwd=tmp_path)
    assert out.returncode == 30, out.stderr
    assert [b["message"] for b in _Hook.bodies] == ["Delete production database?"]
    assert "1.2" in str(_Hook.bodies[0]["preview"])
    assert _Hook.bodies[0]["channel"] == "#ops"  # webhook_payload's fields are in the body
    plain = _write(
        tmp_path / "p.yaml",
        "workflow_id: p\nname: p\nsteps:\n  - name: gate\n    step_type: HUMAN_APPROVAL\n"
        "    inputs: {message: 'Ship it?'}\n",
    )
    env_out = airun("exec", str(plain), cwd=tmp_path, AI_FIRST_APPROVAL_WEBHOOK=hook)
    assert env_out.returncode == 30, env_out.stderr
    assert [b["message"] for b in _Hook.bodies] == ["Delete production database?", "Ship it?"]
    assert _Hook.bodies[1]["workflow"] == "p"


def test_v1_conditions_load_on_deny_and_are_refused_on_allow(tmp_path: Path) -> None:
    """`conditions:` (stored, never evaluated by the old runtime) loads on a DENY rule; on an
    ALLOW it would allow more than it says, so it is refused in one line."""
    deny = _write(
        tmp_path / "d.yaml",
        "default: ALLOW\nrules:\n  - principal: 'agent:*'\n    capabilities: ['io.fs.*']\n"
        "    action: DENY\n    conditions: {environment: production}\n",
    )
    assert airun("validate", str(deny), cwd=tmp_path).returncode == 0
    allow = _write(
        tmp_path / "a.yaml",
        "default: DENY\nrules:\n  - principal: 'agent:*'\n    capabilities: ['io.fs.*']\n"
        "    action: ALLOW\n    conditions: {environment: production}\n",
    )
    out = airun("validate", str(allow), cwd=tmp_path)
    assert out.returncode == 10
    assert "'conditions' were never enforced" in out.stdout


def test_list_dir_of_the_workspace_root(tmp_path: Path) -> None:
    """`io.fs.list_dir "."` lists the workspace, without the runtime's own files."""
    (tmp_path / "data.csv").write_text("x\n")
    flow = _write(
        tmp_path / "l.yaml",
        "workflow_id: l\nname: l\nsteps:\n  - name: ls\n    capability_name: io.fs.list_dir\n"
        "    inputs: {path: '.'}\n  - name: save\n    capability_name: io.fs.write_file\n"
        "    depends_on: [ls]\n    inputs: {path: list.json, content: '{{entries}}'}\n",
    )
    out = airun("exec", str(flow), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    names = {e["name"] for e in json.loads((tmp_path / "list.json").read_text())}
    assert {"data.csv", "l.yaml"} <= names
    assert not any(n.startswith("airun.duckdb") for n in names)


@pytest.mark.parametrize("cap", ["io.presentation.pptx_render_template", "net.github.get_repo"])
def test_old_outside_ids_say_how_to_register_them(tmp_path: Path, cap: str) -> None:
    """An old id served from outside is refused before the run with how to register it."""
    flow = _write(
        tmp_path / "x.yaml",
        f"workflow_id: x\nname: x\nsteps:\n  - {{name: a, capability_name: {cap}}}\n",
    )
    out = airun("exec", str(flow), cwd=tmp_path)
    assert out.returncode == 13
    assert f"register_capability('{cap}'" in out.stderr


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (["workflow", "resume", "wf-1", "--decision", "approve"], "then `airun resume RUN`"),
        (["workflow", "list"], "`airun runs`"),
        (["bridge", "exec-workflow", "f.yaml", "--inputs", "a=b"], "`airun exec FILE --input"),
        (["bridge", "workflow-rollback", "wf-1"], "`airun rollback RUN`"),
        (["undo", "--steps", "2"], "`airun rollback RUN --steps N`"),
    ],
)
def test_old_verbs_name_the_new_command(tmp_path: Path, old: list[str], new: str) -> None:
    """Old verbs are not 'No such command': one line names what replaces them (exit 2)."""
    out = airun(*old, cwd=tmp_path)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "AI-First Runtime" in lines[0] and new in lines[0]


def test_rollback_steps_undoes_the_last_steps(tmp_path: Path) -> None:
    """`airun rollback RUN --steps 2` undoes the two newest steps of a completed run (their
    files are removed) and leaves the first; the run stays completed; once nothing else is left
    the run is rolled back; a waiting run is refused in one line."""
    flow = _write(
        tmp_path / "three.yaml",
        "workflow_id: three\nname: three\nsteps:\n"
        "  - {name: a, capability_name: io.fs.write_file, inputs: {path: a.txt, content: a}}\n"
        "  - {name: b, capability_name: io.fs.write_file, depends_on: [a],\n"
        "     inputs: {path: b.txt, content: b}}\n"
        "  - {name: c, capability_name: io.fs.write_file, depends_on: [b],\n"
        "     inputs: {path: c.txt, content: c}}\n",
    )
    run_id = str(last_json(airun("exec", str(flow), "--json", cwd=tmp_path))["run_id"])
    out = airun("rollback", run_id, "--steps", "2", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "a.txt").exists()
    assert not (tmp_path / "b.txt").exists() and not (tmp_path / "c.txt").exists()
    assert "completed" in airun("runs", cwd=tmp_path).stdout
    again = airun("rollback", run_id, "--steps", "5", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert not (tmp_path / "a.txt").exists()
    assert "rolled_back" in airun("runs", cwd=tmp_path).stdout
    gate = _write(
        tmp_path / "gate.yaml",
        "workflow_id: gt\nname: gt\nsteps:\n  - {name: w, capability_name: io.fs.write_file,\n"
        "     inputs: {path: g.txt, content: g}}\n"
        "  - {name: ok, step_type: HUMAN_APPROVAL, depends_on: [w], inputs: {message: go?}}\n",
    )
    waiting = str(last_json(airun("exec", str(gate), "--json", cwd=tmp_path))["run_id"])
    refused = airun("rollback", waiting, "--steps", "1", cwd=tmp_path)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        f"error: run {waiting} is waiting: --steps undoes the last steps of a completed run "
        f"only; roll it back whole with `airun rollback {waiting}`"
    ]
    assert (tmp_path / "g.txt").exists()


def test_validate_names_the_old_repositorys_other_files(tmp_path: Path) -> None:
    """Pack manifests, skill facades and capability specs are named as such, with what
    replaces them, and are not counted as broken workflows."""
    files = [
        OLD / "packs_load-test_pack.yaml",
        OLD / "specs_facades_pdf.yaml",
        OLD / "capabilities_validated_external_net_finance_yahoo.yaml",
        OLD / "capabilities_validated_generated_net.github.get_repo.yaml",
    ]
    out = airun("validate", *map(str, files), cwd=tmp_path)
    assert out.returncode == 0, out.stdout
    text = out.stdout
    assert "pack manifest, not a workflow" in text and "`airun exec FILE`" in text
    assert "skill facade, not a workflow" in text and "workflow 'financial_report'" in text
    assert "capability: http.request" in text and "http://127.0.0.1:8787/finance/yahoo" in text
    assert "register_capability('net.github.get_repo', fn)" in text
    conv = airun("convert", str(files[0]), cwd=tmp_path)
    assert conv.returncode == 1 and "nothing to convert" in conv.stderr


def test_sys_undo_points_at_rollback_steps(tmp_path: Path) -> None:
    """A `sys.undo` step is refused with what replaces it."""
    flow = _write(
        tmp_path / "u.yaml",
        "workflow_id: u\nname: u\nsteps:\n  - {name: a, capability_name: sys.undo}\n",
    )
    out = airun("exec", str(flow), cwd=tmp_path)
    assert out.returncode != 0 and "airun rollback RUN --steps N" in out.stderr


class _Quote(http.server.BaseHTTPRequestHandler):
    paths: list[str] = []

    def do_GET(self) -> None:
        _Quote.paths.append(self.path)
        body = json.dumps({"symbol": "AAPL", "price": 123.5}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_an_http_capability_spec_registers_and_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The old net_finance_yahoo.yaml spec (its endpoint moved to a loopback server) becomes a
    capability: a seed step calls it with its inputs as the query string and reads its JSON."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Quote)
    _Quote.paths = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        spec = yaml.safe_load(
            (OLD / "capabilities_validated_external_net_finance_yahoo.yaml").read_text()
        )
        spec["adapter"]["config"]["endpoint_url"] = (
            f"http://127.0.0.1:{server.server_address[1]}/finance/yahoo"
        )
        spec_file = _write(tmp_path / "yahoo.yaml", yaml.safe_dump(spec))
        assert airun_nb.register_capability_spec(spec_file) == "net.finance.yahoo"
        monkeypatch.chdir(tmp_path)
        monkeypatch.delenv("AIRUN_WORKSPACE", raising=False)
        monkeypatch.delenv("AIRUN_POLICY", raising=False)
        flow = (
            "workflow_id: q\nname: q\nsteps:\n"
            "  - name: quote\n    capability_name: net.finance.yahoo\n    inputs: {symbol: AAPL}\n"
            "  - name: save\n    capability_name: io.fs.write_file\n    depends_on: [quote]\n"
            "    inputs: {path: q.txt, content: '{{symbol}} {{price}}'}\n"
        )
        result = airun_nb.Workflow.from_yaml(flow).run(db=tmp_path / "q.duckdb")
        assert result.status == "completed", result.error
        assert _Quote.paths == ["/finance/yahoo?symbol=AAPL"]
        assert (tmp_path / "q.txt").read_text() == "AAPL 123.5"
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(airun_nb.AirunError, match="register a function"):
        airun_nb.register_capability_spec(
            OLD / "capabilities_validated_generated_net.github.get_repo.yaml"
        )
