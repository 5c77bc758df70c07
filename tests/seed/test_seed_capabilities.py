"""The old stdlib ids as built-in capabilities: old inputs, old output keys, declared risks,
automatic undo where they change something, the workspace sandbox and the allowlists."""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import airun_nb
from airun_nb import Workflow, WorkflowFailed
from airun_nb.capabilities import get

SEED = Path(__file__).parent
OLD_IDS = [
    "io.fs.hash_file",
    "io.fs.list_dir",
    "io.fs.exists",
    "io.fs.write_bytes",
    "sys.info.get_time",
    "sys.info.get_os",
    "sys.info.get_env_var",
    "sys.exec.run",
    "sys.archive.zip",
    "net.http.get",
    "net.http.post",
    "net.http.put",
    "data.json.parse",
    "data.json.stringify",
    "data.json.get",
    "text.regex.match",
    "text.template.render",
    "math.pandas.calculate",
    "io.pdf.extract_table",
]


@pytest.fixture
def work(tmp_path: Path, db: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    monkeypatch.chdir(ws)
    monkeypatch.setenv("AIRUN_USER", "tester")
    monkeypatch.delenv("AIRUN_POLICY", raising=False)
    return ws


def _run(text: str, db: Path) -> Any:
    return Workflow.from_yaml(text).run(db=db)


def test_every_old_id_is_built_in_with_a_declared_risk_and_undo_where_it_changes_things() -> None:
    reversible = {"io.fs.write_bytes", "sys.archive.zip"}
    for name in OLD_IDS:
        cap = get(name)
        assert cap.risk in ("low", "medium", "high"), name
        assert cap.reversible == (name in reversible), name
    assert get("net.http.post").risk == get("net.http.put").risk == get("sys.exec.run").risk
    assert get("sys.exec.run").risk == "high"


def test_the_stdlib_tour_chains_old_output_keys(work: Path, db: Path) -> None:
    text = (SEED / "stdlib.yaml").read_text().replace("name=NAME", "name=$NAME")
    result = _run(text, db)
    assert result.status == "completed"
    report = (work / "tour" / "report.txt").read_text().splitlines()
    assert report[0] == "name=b 220.0 3"  # {{rendered}} {{calculated_metrics...}} matches
    assert json.loads("\n".join(report[1:]))["price"] == 10  # {{json_string}}
    assert result["second"] == {"value": "b", "success": True}
    assert result["calc"]["calculated_metrics"] == {"revenue_sum": 220.0, "profit": 36.0}
    assert [m["groups"] for m in result["find"]["matches"]] == [["1"], ["22"], ["333"]]
    assert result["blob"]["bytes_written"] == 5
    assert result["blob"]["checksum"] == hashlib.sha256(b"hello").hexdigest()
    assert result["there"]["exists"] and result["there"]["is_file"]
    assert [e["path"] for e in result["listing"]["entries"]] == ["tour/blob.bin", "tour/report.txt"]
    assert result["zip"]["file_count"] == 2
    assert zipfile.ZipFile(work / "tour.zip").namelist() == ["tour/blob.bin", "tour/report.txt"]
    assert result["echo"]["stdout"] == "2 files\n" and result["echo"]["exit_code"] == 0
    digest = hashlib.sha256((work / "tour.zip").read_bytes()).hexdigest()
    assert result["hash"]["checksum_sha256"] == digest
    assert result["os"]["os_name"] in ("linux", "macos", "windows", "other")
    assert result["now"]["timestamp"].isdigit()


UNDO = """
name: undo_{tag}
steps:
  - {{name: act, capability_name: {cap}, inputs: {inputs}}}
  - {{name: boom, capability_name: io.fs.hash_file, depends_on: [act],
      inputs: {{path: nothing.txt}}, max_retries: 0}}
"""


def _undo_run(db: Path, tag: str, cap: str, inputs: dict[str, Any]) -> None:
    text = UNDO.format(tag=tag, cap=cap, inputs=json.dumps(inputs))
    with pytest.raises(WorkflowFailed) as info:
        _run(text, db)
    assert info.value.status == "rolled_back"


def test_write_bytes_undo_restores_the_previous_bytes(work: Path, db: Path) -> None:
    (work / "f.bin").write_bytes(b"before")
    new = base64.b64encode(b"after").decode()
    _undo_run(
        db,
        "bytes",
        "io.fs.write_bytes",
        {"path": "f.bin", "content_base64": new, "overwrite": True},
    )
    assert (work / "f.bin").read_bytes() == b"before"
    _undo_run(
        db,
        "fresh",
        "io.fs.write_bytes",
        {"path": "d/e/g.bin", "content_base64": new, "create_dirs": True},
    )
    assert not (work / "d").exists()  # the file and the folders it made are gone


def test_write_bytes_refuses_to_overwrite_unless_told(work: Path, db: Path) -> None:
    (work / "f.bin").write_bytes(b"keep")
    text = UNDO.format(
        tag="no", cap="io.fs.write_bytes", inputs='{"path": "f.bin", "content_base64": "eA=="}'
    )
    with pytest.raises(WorkflowFailed) as info:
        _run(text.replace("max_retries: 0", "max_retries: 0"), db)
    assert "exists (give overwrite: true)" in str(info.value)
    assert (work / "f.bin").read_bytes() == b"keep"


def test_zip_undo_removes_a_new_archive_and_restores_a_replaced_one(work: Path, db: Path) -> None:
    (work / "src").mkdir()
    (work / "src" / "a.txt").write_text("a")
    _undo_run(db, "zip_new", "sys.archive.zip", {"source_paths": ["src"], "output_path": "o.zip"})
    assert not (work / "o.zip").exists()
    (work / "o.zip").write_bytes(b"old archive")
    _undo_run(db, "zip_old", "sys.archive.zip", {"source_paths": ["src"], "output_path": "o.zip"})
    assert (work / "o.zip").read_bytes() == b"old archive"


@pytest.mark.parametrize(
    ("cap", "inputs", "words"),
    [
        ("sys.info.get_env_var", {"var_name": "AWS_SECRET_ACCESS_KEY"}, "not in the allowlist"),
        ("sys.exec.run", {"command": "rm", "args": ["-rf", "x"]}, "not in the allowlist"),
        ("sys.exec.run", {"command": "/bin/echo"}, "not in the allowlist"),
        ("io.fs.hash_file", {"path": "../outside.txt"}, "outside the workspace"),
        ("io.fs.write_bytes", {"path": "/tmp/x.bin", "content_base64": "eA=="}, "outside"),
        ("sys.archive.zip", {"source_paths": ["/etc"], "output_path": "x.zip"}, "outside"),
    ],
)
def test_allowlists_and_the_sandbox_refuse(
    work: Path, db: Path, cap: str, inputs: dict[str, Any], words: str
) -> None:
    (work.parent / "outside.txt").write_text("x")
    text = (
        f"name: refuse\nsteps:\n  - {{name: s, capability_name: {cap}, max_retries: 0, "
        f"inputs: {json.dumps(inputs)}}}\n"
    )
    with pytest.raises(WorkflowFailed) as info:
        _run(text, db)
    assert words in str(info.value)


class _Handler(http.server.BaseHTTPRequestHandler):
    seen: list[tuple[str, str, bytes]] = []

    def _answer(self) -> None:
        size = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(size) if size else b""
        _Handler.seen.append((self.command, self.headers.get("Content-Type", ""), body))
        status = 500 if self.path == "/broken" else 200
        data = json.dumps({"method": self.command, "got": body.decode()}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    _Handler.seen.clear()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_http_get_post_put_give_the_old_keys(work: Path, db: Path, server: str) -> None:
    text = f"""
name: http
steps:
  - {{name: g, capability_name: net.http.get, inputs: {{url: "{server}/x"}}}}
  - name: p
    capability_name: net.http.post
    depends_on: [g]
    inputs: {{url: "{server}/x", body: "{{{{g.status_code}}}}", content_type: text/plain}}
  - {{name: u, capability_name: net.http.put, depends_on: [p],
      inputs: {{url: "{server}/x", body: {{a: 1}}}}}}
  - {{name: price, capability_name: data.json.get, depends_on: [u],
      inputs: {{json_string: "{{{{u.body}}}}", path: method}}}}
"""
    result = _run(text, db)
    assert result["g"]["status_code"] == 200 and result["g"]["success"] is True
    assert json.loads(result["p"]["body"]) == {"method": "POST", "got": "200"}
    assert result["price"]["value"] == "PUT"
    assert _Handler.seen[1][1] == "text/plain" and _Handler.seen[2][2] == b'{"a": 1}'


def test_a_post_has_no_undo_unless_the_step_gives_compensate(
    work: Path, db: Path, server: str
) -> None:
    text = f"""
name: post_undo
steps:
  - name: p
    capability_name: net.http.post
    inputs: {{url: "{server}/x", body: "create"}}
    compensation: {{capability_name: net.http.put, inputs: {{url: "{server}/x", body: "undo"}}}}
  - {{name: q, capability_name: net.http.post, depends_on: [p], inputs: {{url: "{server}/x",
      body: "plain"}}}}
  - {{name: bad, capability_name: net.http.get, depends_on: [q], max_retries: 0,
      inputs: {{url: "{server}/broken"}}}}
"""
    with pytest.raises(WorkflowFailed) as info:
        _run(text, db)
    assert "answered 500" in str(info.value)
    assert [(m, b) for m, _, b in _Handler.seen] == [
        ("POST", b"create"),
        ("POST", b"plain"),
        ("GET", b""),
        ("PUT", b"undo"),  # only the step that gave compensate is undone
    ]


def test_pdf_tables_feed_pandas(work: Path, db: Path) -> None:
    pytest.importorskip("pdfplumber", reason="the pdf extra is not installed")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 2))
    ax.axis("off")
    ax.table(
        cellText=[["100", "70"], ["120", "78"]], colLabels=["revenue", "expenses"], loc="center"
    )
    fig.savefig(work / "q4.pdf")
    plt.close(fig)
    text = """
name: pdf_report
initial_state: {pdf_path: q4.pdf}
steps:
  - {name: extract, capability_name: io.pdf.extract_table, inputs: {pdf_path: "{{pdf_path}}"}}
  - name: calc
    capability_name: math.pandas.calculate
    depends_on: [extract]
    inputs:
      data: "{{extracted_tables}}"
      operations: [{type: calculate, formula: "revenue - expenses",
                    output_column: profit}]
"""
    result = _run(text, db)
    tables = result["extract"]["extracted_tables"]
    assert tables[0]["headers"] == ["revenue", "expenses"] and tables[0]["page"] == 1
    assert result["calc"]["calculated_metrics"] == {"profit": 36.0}


def test_ids_of_outside_services_name_how_to_register_them(work: Path, db: Path) -> None:
    for name in ("crm.create_account", "cloud.provision_tenant", "email.send", "web.browser.x"):
        text = f"name: ext\nsteps:\n  - {{name: s, capability_name: {name}}}\n"
        with pytest.raises(airun_nb.SpecError) as info:
            _run(text, db)
        assert f"register_capability('{name}'" in str(info.value)
        assert "not built in" in str(info.value)
