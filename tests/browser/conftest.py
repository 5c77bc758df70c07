"""pytest glue for the real-browser harness (see harness.py).

Fixture ``lab``: a factory bound to a fresh tmp root dir::

    @pytest.mark.browser
    def test_something(lab):
        write_notebook(lab.root / "nb.ipynb")
        page = lab.start(env={"AIRUN_DB": str(lab.root / "airun.duckdb")})
        page.open_notebook("nb.ipynb")
        page.run_all()
        page.click_button("Approve")

Fixture ``jupyter``: the same factory, parametrized over both front ends, JupyterLab
(``[lab]``) and Notebook 7 (``[notebook7]``): a test written against it runs in each.

``factory.shot(name)`` is where a test writes a screenshot: the test's artifacts (removed when
it passes), or, when ``AIRUN_SCREENSHOTS=<dir>`` is set, ``<dir>/<front end>-<name>.png``,
kept.

Missing Chromium skips the test locally, but FAILS it when ``CI`` is set.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Generator, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from .harness import CHROMIUM_PATH, FRONT_ENDS, ChromiumBrowser, JupyterLabServer, LabPage

REPO_ROOT = Path(__file__).resolve().parents[2]
SRC_DIR = REPO_ROOT


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drives a real JupyterLab in headless Chromium")


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    # remember each phase's report so the ``lab`` fixture knows if the test failed
    outcome: Any = yield
    rep = outcome.get_result()
    setattr(item, f"_browser_rep_{rep.when}", rep)


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require_browser() -> None:
    """Skip (locally) or fail (in CI) when the browser stack is unavailable."""
    problems = []
    if not os.path.exists(CHROMIUM_PATH):
        problems.append(f"Chromium not found at {CHROMIUM_PATH} (run scripts/install_browser.sh)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        problems.append(f"python package 'playwright' not importable: {exc}")
    if not problems:
        return
    msg = "; ".join(problems)
    if _in_ci():
        pytest.fail(f"browser tests cannot run in CI: {msg}", pytrace=False)
    pytest.skip(msg)


class LabFactory:
    """Starts JupyterLab servers + Chromium pages over one root dir."""

    def __init__(self, root: Path, artifacts: Path, front_end: str = "lab") -> None:
        self.root = root
        self.artifacts = artifacts
        self.front_end = front_end
        self._servers: list[JupyterLabServer] = []
        self._browsers: list[ChromiumBrowser] = []
        self.pages: list[LabPage] = []
        self._pw_cm: Any = None
        self._pw: Any = None

    def _playwright(self) -> Any:
        # one sync_playwright() per thread: shared by every browser of the test
        if self._pw is None:
            from playwright.sync_api import sync_playwright

            self._pw_cm = sync_playwright()
            self._pw = self._pw_cm.__enter__()
        return self._pw

    def shot(self, name: str) -> Path:
        """Where to write the screenshot ``name`` (see the module's docstring)."""
        keep = os.environ.get("AIRUN_SCREENSHOTS", "").strip()
        if keep:
            out = Path(keep)
            out.mkdir(parents=True, exist_ok=True)
            return out / f"{self.front_end}-{name}.png"
        return self.artifacts / f"{name}.png"

    @property
    def server(self) -> JupyterLabServer:
        return self._servers[-1]

    @property
    def page(self) -> LabPage:
        return self.pages[-1]

    def start(
        self,
        env: Mapping[str, str] | None = None,
        *,
        pythonpath_src: bool = True,
        startup_timeout: float = 120.0,
    ) -> LabPage:
        """Start a JupyterLab on ``self.root`` plus a fresh Chromium; return its LabPage.

        ``env`` is inherited by the kernels.  With ``pythonpath_src`` the repo's
        root is prepended to PYTHONPATH so kernels import this working tree.
        """
        full_env = dict(env or {})
        if pythonpath_src:
            parts = [str(SRC_DIR)]
            existing = full_env.get("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
            if existing:
                parts.append(existing)
            full_env["PYTHONPATH"] = os.pathsep.join(parts)
        n = len(self._servers)
        server = JupyterLabServer(
            self.root,
            env=full_env,
            log_path=self.artifacts / f"jupyterlab-{n}.log",
            startup_timeout=startup_timeout,
            front_end=self.front_end,
        )
        self._servers.append(server)  # before start(): close() reaps it on failure
        server.start()
        browser = ChromiumBrowser(playwright=self._playwright())
        self._browsers.append(browser)
        browser.start()
        page = LabPage(browser.page, server)
        self.pages.append(page)
        return page

    __call__ = start

    def stop_server(self, server: JupyterLabServer | None = None) -> None:
        """Stop one server (default: the latest) early, e.g. to test a restart."""
        (server or self.server).stop()

    def close(self, failed: bool) -> None:
        for i, page in enumerate(self.pages):
            if failed:
                with contextlib.suppress(Exception):
                    page.screenshot(self.artifacts / f"failure-{i}.png")
        for i, browser in enumerate(self._browsers):
            if failed and browser.console:
                log = self.artifacts / f"browser-console-{i}.log"
                log.write_text("\n".join(browser.console))
            browser.stop()
        if self._pw_cm is not None:
            with contextlib.suppress(Exception):
                self._pw_cm.__exit__(None, None, None)
            self._pw_cm = self._pw = None
        for server in reversed(self._servers):
            server.snapshot_children()
            server.stop()
            server.cleanup_state()


def _factory(
    tmp_path: Path, request: pytest.FixtureRequest, front_end: str
) -> Iterator[LabFactory]:
    require_browser()
    root = tmp_path / "root"
    root.mkdir()
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    factory = LabFactory(root, artifacts, front_end=front_end)
    try:
        yield factory
    finally:
        rep = getattr(request.node, "_browser_rep_call", None)
        failed = rep is None or rep.failed
        factory.close(failed=failed)
        if failed:
            print(f"\n[browser harness] artifacts kept in {artifacts}")
            for server in factory._servers:
                print(f"--- {server.log_path} (tail) ---\n{server.log_tail(40)}")
        else:
            shutil.rmtree(artifacts, ignore_errors=True)


@pytest.fixture
def lab(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LabFactory]:
    """JupyterLab only."""
    yield from _factory(tmp_path, request, "lab")


@pytest.fixture(params=FRONT_ENDS)
def jupyter(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LabFactory]:
    """JupyterLab, then Notebook 7: the test runs once in each front end."""
    yield from _factory(tmp_path, request, request.param)
