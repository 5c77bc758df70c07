"""The service's pages as a browser draws them: the dark colour scheme, the approvals list that
drops a decided card without a reload, the offline API page, and the run's timeline picture.

A real `airun serve` over a real DuckDB store; a real headless Chromium (its resolver refuses
every host but loopback, so anything fetched from the internet would fail).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import airun_nb
from airun_nb import Workflow
from support.service import NAMESPACE, gated_spec, make_token, running_server

from .conftest import require_browser
from .harness import CHROMIUM_ARGS, CHROMIUM_PATH

pytestmark = pytest.mark.browser


@pytest.fixture
def browser() -> Iterator[Any]:
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM_PATH, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def login(page: Any, url: str, token: str) -> None:
    page.goto(url + "/approvals")
    page.fill("input[name=token]", token)
    page.click("button[type=submit]")
    page.wait_for_url(url + "/approvals")


def start(db: Path, name: str) -> str:
    run = Workflow.from_yaml(gated_spec(name, approvers=["bob"])).run(
        db=db, namespace=NAMESPACE, raise_on_failure=False
    )
    assert run.status == "waiting"
    return run.run_id


def test_pages_follow_the_colour_scheme_and_drop_a_decided_card_live(
    tmp_path: Path, browser: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the system's dark scheme the page is dark (and light with the light one); a gate
    decided elsewhere leaves the open approvals list without a reload and the count goes
    down; the API page and the run's timeline load with nothing from the internet."""
    monkeypatch.chdir(tmp_path)  # the workflow's steps write their effects here
    db = tmp_path / "airun.duckdb"
    monkeypatch.setenv("AIRUN_DB", str(db))
    monkeypatch.setenv("AIRUN_USER", "alice")
    monkeypatch.setenv("AIRUN_IDENTITY", "env")
    first, second = start(db, "first"), start(db, "second")
    token = make_token(db, "bob")
    with running_server(db, tmp_path) as server:
        colours = {}
        for scheme in ("light", "dark"):
            context = browser.new_context(
                viewport={"width": 390, "height": 844}, color_scheme=scheme
            )
            page = context.new_page()
            login(page, server.url, token)
            colours[scheme] = page.evaluate("getComputedStyle(document.body).backgroundColor")
            page.screenshot(path=str(tmp_path / f"approvals-{scheme}.png"), full_page=True)
            context.close()
        assert colours == {"light": "rgb(246, 248, 250)", "dark": "rgb(13, 17, 23)"}

        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        failed: list[str] = []
        page.on("requestfailed", lambda r: failed.append(r.url))
        login(page, server.url, token)
        assert page.inner_text("#gate-count") == "2"
        airun_nb.approve(first, "review", by="bob", db=db)
        page.locator(f"#gate-{first}-review").wait_for(state="detached", timeout=60_000)
        assert page.inner_text("#gate-count") == "1"
        assert page.locator(f"#gate-{second}-review").is_visible()

        page.goto(server.url + "/docs")
        assert page.locator("h1").inner_text().startswith("airun_nb approvals")
        assert page.locator(".api-endpoint").count() >= 6

        page.goto(server.url + f"/runs/{first}")
        picture = page.locator("#timeline img")
        picture.wait_for(state="visible", timeout=60_000)
        page.wait_for_function(
            "document.querySelector('#timeline img').naturalWidth > 0", timeout=60_000
        )
        assert not [u for u in failed if "/v1/events" not in u], failed
        context.close()
