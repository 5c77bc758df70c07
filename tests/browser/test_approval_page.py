"""The approval page in a real headless Chromium, over a real `airun serve` and a real kernel.

A kernel (jupyter_client) runs a ``%%workflow`` cell that stops at a gate. A reviewer who has
only a browser and a token logs in, sees the gate, and clicks Approve; the runs list, open in
another tab, changes without a reload while the run goes on to the end in its kernel. That
test runs once on each backend: the DuckDB file, and the team store on a real PostgreSQL
server (``airun serve --db postgresql://...``, the kernel's gate watcher woken by NOTIFY).
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import airun_nb
from support.service import make_token, running_server

from .conftest import REPO_ROOT, require_browser
from .harness import CHROMIUM_ARGS, CHROMIUM_PATH

pytestmark = pytest.mark.browser

FUNCTIONS = """
def _count(name):
    with open(name, "a") as fh:
        fh.write("1\\n")

def prepare():
    _count("prepare.count")
    import pandas as pd
    return pd.DataFrame({"region": ["north", "south", "east"], "amount": [120, 80, 45]})

def ship(decision):
    _count("ship.count")
    return decision["actor"]
"""

WORKFLOW = """%%workflow release
steps:
  - id: prepare
    call: prepare
  - id: review
    needs: [prepare]
    approval:
      message: "Release {{ steps.prepare.output | length }} regions?"
      show: "{{ steps.prepare.output }}"
      approvers: [bob]
  - id: ship
    needs: [review]
    call: ship
    with: {decision: "{{ steps.review.output }}"}
"""


class Kernel:
    """A real IPython kernel in ``folder``, driven through jupyter_client."""

    def __init__(self, folder: Path, db: Path | str) -> None:
        from jupyter_client.manager import start_new_kernel

        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRUN_")}
        env.update(
            AIRUN_DB=str(db),
            AIRUN_USER="alice",
            AIRUN_IDENTITY="env",
            PYTHONPATH=os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]),
        )
        self.km, self.kc = start_new_kernel(
            kernel_name="python3", startup_timeout=120, cwd=str(folder), env=env
        )

    def run(self, code: str) -> str:
        out: list[str] = []

        def hook(msg: dict[str, Any]) -> None:
            content = msg["content"]
            if msg["msg_type"] == "stream":
                out.append(content["text"])
            elif msg["msg_type"] in ("execute_result", "display_data"):
                out.append(content["data"].get("text/plain", ""))
            elif msg["msg_type"] == "error":
                out.append(f"{content['ename']}: {content['evalue']}")

        reply = self.kc.execute_interactive(code, timeout=180, output_hook=hook)
        text = "".join(out)
        assert reply["content"]["status"] == "ok", text
        return text

    def stop(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM_PATH, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def run_status(db: Path | str, run_id: str) -> str:
    df = airun_nb.runs(db=db)
    return str(df.loc[df["run_id"] == run_id, "status"].iloc[0])


def wait_for_status(db: Path | str, run_id: str, status: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while run_status(db, run_id) != status:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def count(folder: Path, name: str) -> int:
    p = folder / f"{name}.count"
    return len(p.read_text().split()) if p.exists() else 0


def test_a_reviewer_with_a_browser_and_a_token_approves_a_kernels_gate(
    tmp_path: Path,
    browser: Any,
    monkeypatch: pytest.MonkeyPatch,
    backend: str,
    request: pytest.FixtureRequest,
) -> None:
    """Bob, with a browser and a token, approves the gate of alice's run in her kernel: the
    decision is recorded (who, channel, comment) in the store `airun serve` serves, the runs
    list hears it without a reload, and the kernel continues the run to the end; the same on
    the DuckDB file and on a PostgreSQL team store."""
    from PIL import Image

    folder = tmp_path / "nb"
    folder.mkdir()
    db: Path | str = folder / "airun.duckdb"
    if backend == "postgres":
        db = request.getfixturevalue("pg_url")
    monkeypatch.setenv("AIRUN_DB", str(db))
    kernel = Kernel(folder, db)
    try:
        kernel.run("%load_ext airun_nb")
        kernel.run(FUNCTIONS)
        kernel.run(WORKFLOW)
        runs = airun_nb.runs(db=db)
        assert runs["status"].tolist() == ["waiting"]
        run_id = str(runs["run_id"].iloc[0])
        token = make_token(db, "bob")
        with running_server(db, tmp_path) as server:
            context = browser.new_context(viewport={"width": 1300, "height": 900})
            listing = context.new_page()
            listing.goto(server.url + "/runs")
            assert "/login" in listing.url
            listing.fill("input[name=token]", token)
            listing.click("button[type=submit]")
            listing.wait_for_url(server.url + "/runs")
            row = listing.locator(f"#run-{run_id}")
            assert row.locator("td.status").inner_text() == "waiting for approval"
            assert row.locator("td.gates").inner_text() == "1"
            listing.evaluate("window.__not_reloaded = true")

            page = context.new_page()
            page.goto(server.url + "/approvals")
            card = page.locator(f"#gate-{run_id}-review")
            assert "Release 3 regions?" in card.inner_text()
            assert card.locator(".preview table td", has_text="north").count() == 1
            assert "Approval needed" in card.inner_text()
            assert "may decide: bob (not alice, who started the run)" in card.inner_text()
            card.locator("textarea[name=comment]").fill("numbers checked")
            card.locator("button.approve").click()
            page.wait_for_selector(".flash.ok")
            assert "Approved gate review of run " + run_id in page.inner_text(".flash.ok")
            decided = page.locator(f"#gate-{run_id}-review")
            assert decided.get_attribute("data-status") == "approved"
            assert "Approved by bob" in decided.inner_text() and "via web" in decided.inner_text()
            shot = decided.screenshot(path=str(tmp_path / "decided.png"))

            gate = airun_nb.approvals(run_id, db=db).iloc[0]
            assert (gate["actor"], gate["channel"], gate["comment"]) == (
                "bob",
                "web",
                "numbers checked",
            )
            # The runs list heard the decision on its event stream, without a reload.
            listing.wait_for_function(
                f"document.querySelector('#run-{run_id} td.gates').textContent === '0'",
                timeout=15_000,
            )
            # The run goes on in its kernel by itself: the kernel's gate watcher continues it.
            assert wait_for_status(db, run_id, "completed", 30), (
                "the kernel did not continue the run after the web decision"
            )
            assert airun_nb.runs(db=db)["run_id"].tolist() == [run_id]
            listing.wait_for_function(
                f"document.querySelector('#run-{run_id} td.status').textContent === 'completed'",
                timeout=15_000,
            )
            assert listing.evaluate("window.__not_reloaded") is True
            listing.screenshot(path=str(tmp_path / "runs.png"))
            context.close()
        assert count(folder, "prepare") == 1 and count(folder, "ship") == 1
    finally:
        kernel.stop()

    # The screenshot shows the decided card: not blank, with the green of "approved" in it.
    image = Image.open(io.BytesIO(shot)).convert("RGB")
    assert image.width > 300 and image.height > 80
    colors = image.getcolors(maxcolors=1_000_000) or []
    assert len(colors) > 20, "the screenshot is blank"
    green = sum(n for n, (r, g, b) in colors if g > 100 and r < 80 and b < 90)
    assert green > 30, "no green 'approved' status in the screenshot"


FORM_WORKFLOW = """
name: promo
steps:
  - id: review
    approval:
      message: "Discount the spring orders?"
      quorum: 2
      fields:
        percent: {type: integer, required: true, help: "whole percent"}
        region: {type: choice, choices: [eu, us]}
        code: {type: string, secret: true}
      options: [apply, hold]
"""


@pytest.mark.parametrize("width", [390, 1280])
def test_the_form_on_a_phone_and_a_desktop_takes_a_vote(
    tmp_path: Path, browser: Any, monkeypatch: pytest.MonkeyPatch, width: int
) -> None:
    """At 390 px (a phone) and at desktop width the login, the card and its form fit the
    screen without sideways scrolling; a wrong value comes back as one line with nothing
    recorded; a filled form and an option record bob's vote, and the card says 1 of 2."""
    from PIL import Image

    from airun_nb import Workflow

    db = tmp_path / "airun.duckdb"
    monkeypatch.setenv("AIRUN_DB", str(db))
    monkeypatch.setenv("AIRUN_USER", "alice")
    monkeypatch.setenv("AIRUN_IDENTITY", "env")
    run = Workflow.from_yaml(FORM_WORKFLOW).run(db=db, raise_on_failure=False)
    assert run.status == "waiting"
    token = make_token(db, "bob")
    with running_server(db, tmp_path) as server:
        context = browser.new_context(viewport={"width": width, "height": 844})
        page = context.new_page()
        page.goto(server.url + "/approvals")
        page.fill("input[name=token]", token)
        page.click("button[type=submit]")
        page.wait_for_url(server.url + "/approvals")

        def fits() -> bool:
            return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))

        assert fits()
        card = page.locator(f"#gate-{run.run_id}-review")
        assert "Approval needed" in card.inner_text()
        assert "2 distinct approvals needed" in card.inner_text()
        assert card.locator("input[name='field.code']").get_attribute("type") == "password"
        box = card.locator("input[name='field.percent']").bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width

        card.locator("input[name='field.percent']").fill("7.5")  # not a whole number
        card.locator("input[value=apply]").check()
        card.locator("button.approve").click()
        page.wait_for_selector(".flash")
        assert "must be a whole number" in page.inner_text(".flash.error")
        assert airun_nb.approvals(run.run_id, db=db)["votes"].isna().all()

        card = page.locator(f"#gate-{run.run_id}-review")
        card.locator("input[name='field.percent']").fill("15")
        card.locator("select[name='field.region']").select_option("eu")
        card.locator("input[name='field.code']").fill("s3cret-77")
        card.locator("input[value=apply]").check()
        card.locator("button.approve").click()
        page.wait_for_selector(".flash.ok")
        assert "1 of 2 approvals" in page.inner_text(".flash.ok")
        assert fits()
        shot = tmp_path / f"vote-{width}.png"
        page.screenshot(path=str(shot), full_page=True)
        with Image.open(shot) as img:
            assert img.size[0] == width
            assert len(set(img.convert("L").getdata())) > 10  # drawn, not a blank page
        context.close()
    row = airun_nb.approvals(run.run_id, db=db).iloc[0]
    assert row["status"] == "open" and "s3cret-77" not in str(row["votes"])
    assert '"percent": 15' in row["votes"] and '"channel": "web"' in row["votes"]
