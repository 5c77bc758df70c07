"""The service's pages beyond the gates: the offline API page, the run's timeline picture, the
link back to the notebook, the dark theme's colours, and the approvals list that drops a card
when its gate is decided elsewhere (what the page's script listens to on /v1/events).

A real `airun serve` on 127.0.0.1 over a real DuckDB store, driven over HTTP; what a browser
draws is tested in tests/browser.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

import airun_nb
from airun_nb import Workflow
from support.service import NAMESPACE, Server, gated_spec, make_token, running_server

SAFETY = 120.0


@pytest.fixture
def env(db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in ("AIRUN_APPROVAL", "AIRUN_APPROVAL_MODE", "AIRUN_CONFIG", "AIRUN_SERVICE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AIRUN_USER", "alice")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "airun.yaml").write_text(yaml.safe_dump({"jupyter_url": "http://127.0.0.1:8888/"}))
    return db


@pytest.fixture
def server(env: Path, tmp_path: Path) -> Iterator[Server]:
    with running_server(env, tmp_path) as srv:
        yield srv


def start(db: Path, **approval: Any) -> str:
    result = Workflow.from_yaml(gated_spec(**approval)).run(
        db=db, namespace=NAMESPACE, raise_on_failure=False
    )
    assert result.status == "waiting"
    return result.run_id


def login(c: httpx.Client, token: str) -> None:
    form = c.get("/login", params={"next": "/"})
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf
    done = c.post("/login", data={"csrf": csrf.group(1), "token": token, "next": "/"})
    assert done.status_code == 303


def test_the_api_page_lists_every_endpoint_and_loads_nothing_from_elsewhere(
    server: Server,
) -> None:
    """/docs answers without a login and without the internet: every route of the OpenAPI
    description is on it with its parameters and body fields, and no script, style or
    picture comes from another host (the usual OpenAPI UIs load theirs from a CDN)."""
    page = httpx.get(server.url + "/docs", timeout=30)
    assert page.status_code == 200
    spec = httpx.get(server.url + "/openapi.json", timeout=30).json()
    for path, ops in spec["paths"].items():
        for method in ops:
            assert f'<code class="method">{method.upper()}</code> <code>{path}</code>' in page.text
    assert "request_id" in page.text  # a body field of the decision endpoints
    assert not re.search(r'<(script|link|img)[^>]+(src|href)="(https?:)?//', page.text)
    assert "cdn" not in page.text.lower()


def test_the_run_page_draws_the_timeline_and_links_the_notebook(
    server: Server, env: Path, ipython: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run started from a notebook (its path as Jupyter gives it) shows on its page a link to
    that notebook on the configured Jupyter server, the same link on its gate's card, and its
    timeline, served as an SVG picture that can run no script."""
    monkeypatch.setenv("JPY_SESSION_NAME", "reports/payout.ipynb")
    ipython.user_ns.update(NAMESPACE)
    ipython.run_line_magic("config", f"Workflow.db = '{env}'")
    ipython.run_cell_magic("workflow", "", gated_spec())
    run_id = str(airun_nb.runs(db=env)["run_id"].iloc[0])
    with server.client() as c:
        login(c, make_token(env, "bob"))
        page = c.get(f"/runs/{run_id}")
        assert page.status_code == 200
        link = "http://127.0.0.1:8888/lab/tree/reports/payout.ipynb"
        assert f'<a href="{link}">reports/payout.ipynb</a>' in page.text
        assert f'class="notebook" href="{link}"' in page.text
        assert f'src="/runs/{run_id}/timeline.svg"' in page.text
        picture = c.get(f"/runs/{run_id}/timeline.svg")
        assert picture.status_code == 200
        assert picture.headers["content-type"].startswith("image/svg+xml")
        assert "default-src 'none'" in picture.headers["content-security-policy"]
        assert (
            "<svg" in picture.text and "prepare" in picture.text and "<script" not in picture.text
        )
        approvals = c.get("/approvals")
        assert f'class="notebook" href="{link}"' in approvals.text
    with httpx.Client(base_url=server.url) as anonymous:
        assert anonymous.get(f"/runs/{run_id}/timeline.svg").status_code == 303


def test_the_pages_follow_a_dark_colour_scheme(server: Server, env: Path) -> None:
    """The pages declare both colour schemes and give the dark one its own colours (the
    browser picks by the system's setting; tests/browser checks what it draws)."""
    with server.client() as c:
        page = c.get("/login")
    css = page.text
    assert "color-scheme: light dark" in css
    dark = css[css.index("@media (prefers-color-scheme: dark)") :]
    background = re.search(r"--bg:\s*(#[0-9a-f]{6})", dark)
    assert background and int(background.group(1)[1:3], 16) < 0x40  # a dark background


def test_the_approvals_page_listens_for_decisions_and_the_stream_names_the_card(
    server: Server, env: Path
) -> None:
    """The approvals page subscribes to /v1/events from the event it read its list at; when a
    gate is decided elsewhere (here the Python API) that stream carries a ``gate_decided`` event
    naming the run and gate, which is exactly the id of the card the page's script removes."""
    run_id = start(env, approvers=["bob"])
    token = make_token(env, "bob")
    with server.client() as c:
        login(c, token)
        page = c.get("/approvals")
        card = f'id="gate-{run_id}-review"'
        assert card in page.text
        after = re.search(r'new EventSource\("/v1/events\?after=(\d+)"\)', page.text)
        assert after, "the page's stream starts where its list was read"
        assert '"gate-" + ev.run_id + "-" + ev.step_id' in page.text
    seen: list[dict[str, Any]] = []
    ready = threading.Event()
    cursor = after.group(1)  # the stream from where the page's list was read

    def listen() -> None:
        with (
            httpx.Client(base_url=server.url, timeout=SAFETY) as c,
            c.stream(
                "GET",
                "/v1/events",
                params={"after": cursor, "run": run_id},
                headers={"Authorization": f"Bearer {token}"},
            ) as stream,
        ):
            ready.set()
            for line in stream.iter_lines():
                if line.startswith("data:"):
                    ev = json.loads(line[5:])
                    seen.append(ev)
                    if ev["kind"] == "gate_decided":
                        return

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    assert ready.wait(SAFETY)
    airun_nb.approve(run_id, "review", by="bob", db=env)
    thread.join(SAFETY)
    decided = [e for e in seen if e["kind"] == "gate_decided"]
    assert decided and decided[0]["run_id"] == run_id and decided[0]["step_id"] == "review"
    with server.client() as c:
        login(c, token)
        assert f'id="gate-{run_id}-review"' not in c.get("/approvals").text
