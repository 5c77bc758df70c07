"""Real end-to-end browser harness: a real JupyterLab on loopback, driven by a
real headless Chromium (Debian's ``/usr/bin/chromium``) through Playwright.
The same server class runs either front end: JupyterLab 4 (``front_end="lab"``)
or Notebook 7 (``front_end="notebook7"``); both are the same kind of app in the
page (``window.jupyterapp``), so every page helper works in both.

Nothing here downloads anything: Playwright is pointed at the system Chromium
(never run ``playwright install``), JupyterLab is started with every remote
fetch (news, update checks, PyPI extension manager) switched off, and the
browser's resolver refuses every host except loopback.

Three building blocks, usable with or without pytest:

* :class:`JupyterLabServer`  - context manager running ``python -m jupyterlab``
  in its own process group, isolated config/settings/workspace/runtime dirs.
* :class:`ChromiumBrowser`   - context manager giving a Playwright ``Page`` in a
  fresh persistent context (empty user-data-dir) of the system Chromium.
* :class:`LabPage`           - notebook-level helpers over that page:
  ``open_notebook``, ``run_all``, ``wait_idle``, ``click_button``,
  ``output_text``, ``screenshot``, ``element_screenshot``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

CHROMIUM_PATH = os.environ.get("AIRUN_CHROMIUM", "/usr/bin/chromium")

#: Flags required on this (closed-network) machine.  ``--headless`` is also
#: added by Playwright itself; repeating it is harmless.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # extra hardening / robustness
    "--disable-dev-shm-usage",
    "--disable-extensions",
    "--no-default-browser-check",
    "--disable-default-apps",
    "--metrics-recording-only",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1 , EXCLUDE localhost",
]

#: The front ends a :class:`JupyterLabServer` can run, and the page that opens a notebook in each.
FRONT_ENDS = ("lab", "notebook7")
_NOTEBOOK_PAGE = {"lab": "/lab/tree/", "notebook7": "/notebooks/"}

DEFAULT_STARTUP_TIMEOUT = 120.0  # s; first JupyterLab start on 2 cores can be slow
DEFAULT_NOTEBOOK_TIMEOUT = 90.0  # s; page load + kernel start
DEFAULT_IDLE_TIMEOUT = 60.0


class _PortTaken(Exception):
    """The server could not bind its port (lost a race after free_port())."""


class HarnessError(AssertionError):
    """Raised when the lab/browser does not reach the expected state.

    Subclasses AssertionError so pytest reports it as a test failure with the
    full message (which includes the server log tail)."""


# --------------------------------------------------------------------------- #
# small helpers
# --------------------------------------------------------------------------- #


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path | str, lines: int = 60) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as exc:  # pragma: no cover - diagnostics only
        return f"<could not read {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


def _descendants(pid: int) -> list[int]:
    """All live descendant pids of ``pid`` (Linux /proc scan, no psutil)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read().decode(errors="replace")
        except OSError:
            continue
        # field 4 (ppid) comes after the ")" that closes the comm field
        try:
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        except (ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out: list[int] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            out.append(child)
            stack.append(child)
    return out


def _kill_quietly(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _killpg_quietly(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux: SIGTERM the server if the test process dies without cleanup
    (e.g. os._exit from a thread-based timeout).  Kernels follow their server
    via ipykernel's parent poller (JPY_PARENT_PID)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except Exception:
        pass


# --------------------------------------------------------------------------- #
# JupyterLab server
# --------------------------------------------------------------------------- #

#: User settings written into the isolated settings dir: no news / update
#: toasts, no extension manager, every notebook cell attached to the DOM
#: (windowingMode "none") so output_text() sees all outputs, and no kernel
#: selection / restart confirmation dialogs.
LAB_USER_SETTINGS: dict[str, dict[str, Any]] = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
    "@jupyterlab/extensionmanager-extension/plugin.jupyterlab-settings": {
        "enabled": False,
    },
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {
        "windowingMode": "none",
        # notebooks without kernelspec metadata: no "Select Kernel" dialog
        "autoStartDefaultKernel": True,
    },
    "@jupyterlab/apputils-extension/sessionDialogs.jupyterlab-settings": {
        "skipKernelRestartDialog": True,
    },
}


class JupyterLabServer:
    """Run a real JupyterLab (or, with ``front_end="notebook7"``, a real Notebook 7) on
    127.0.0.1 for the duration of a ``with`` block.

    ``env`` is merged over ``os.environ`` and is what kernels inherit (kernels
    are children of the server), so set e.g. ``AIRUN_DB`` there.
    """

    def __init__(
        self,
        root_dir: Path | str,
        env: Mapping[str, str] | None = None,
        *,
        port: int | None = None,
        token: str | None = None,
        log_path: Path | str | None = None,
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
        extra_args: list[str] | None = None,
        front_end: str = "lab",
    ) -> None:
        if front_end not in FRONT_ENDS:
            raise ValueError(f"front_end must be one of {FRONT_ENDS}, not {front_end!r}")
        self.front_end = front_end
        self.root_dir = Path(root_dir).resolve()
        self.env_overrides = dict(env or {})
        self.port = port or free_port()
        self.token = token or secrets.token_hex(16)
        self.startup_timeout = startup_timeout
        self.extra_args = list(extra_args or [])
        self._state_dir = Path(tempfile.mkdtemp(prefix="airun-lab-state-"))
        self.log_path = Path(log_path) if log_path else self._state_dir / "jupyterlab.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_fh: Any = None
        self._known_children: set[int] = set()
        self._log_offset = 0

    # -- public properties -------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str = "/lab", **query: str) -> str:
        q = {"token": self.token, **query}
        return f"{self.base_url}{path}?{urllib.parse.urlencode(q)}"

    def notebook_url(self, relpath: str) -> str:
        """The page that opens the notebook ``relpath`` in this server's front end."""
        quoted = urllib.parse.quote(relpath.lstrip("/"))
        return self.url(_NOTEBOOK_PAGE[self.front_end] + quoted)

    def log_tail(self, lines: int = 60) -> str:
        return tail(self.log_path, lines)

    def fail(self, message: str) -> HarnessError:
        return HarnessError(
            f"{message}\n--- jupyterlab log tail ({self.log_path}) ---\n{self.log_tail()}"
        )

    # -- lifecycle ---------------------------------------------------------
    def _write_settings(self) -> Path:
        settings_dir = self._state_dir / "lab-user-settings"
        for rel, payload in LAB_USER_SETTINGS.items():
            p = settings_dir / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(json.dumps(payload, indent=2))
        return settings_dir

    def command(self) -> list[str]:
        settings_dir = self._write_settings()
        workspaces_dir = self._state_dir / "lab-workspaces"
        workspaces_dir.mkdir(exist_ok=True)
        module = "notebook" if self.front_end == "notebook7" else "jupyterlab"
        app = "JupyterNotebookApp" if self.front_end == "notebook7" else "LabApp"
        app_args = [
            # window.jupyterapp for reliable commands/kernel status
            f"--{app}.expose_app_in_browser=True",
            f"--{app}.user_settings_dir={settings_dir}",
            f"--{app}.workspaces_dir={workspaces_dir}",
        ]
        if self.front_end == "lab":
            # nothing remote: no news feed, no update check, no PyPI manager (JupyterLab's
            # settings; the browser reaches no host but loopback in either front end)
            app_args += [
                "--LabApp.news_url=None",
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
                "--LabApp.extension_manager=readonly",
            ]
        return [
            sys.executable,
            "-m",
            module,
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={self.port}",
            "--port-retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root_dir}",
            "--ServerApp.open_browser=False",
            "--ServerApp.allow_remote_access=False",
            "--ServerApp.terminals_enabled=False",
            *app_args,
            *(["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []),
            *self.extra_args,
        ]

    def _environ(self) -> dict[str, str]:
        env = dict(os.environ)
        # isolate from the developer's own Jupyter state
        env["JUPYTER_CONFIG_DIR"] = str(self._state_dir / "jupyter-config")
        env["JUPYTER_RUNTIME_DIR"] = str(self._state_dir / "jupyter-runtime")
        # JUPYTER_DATA_DIR is left alone: kernelspecs/labextensions live there
        env["JUPYTERLAB_SETTINGS_DIR"] = str(self._state_dir / "lab-user-settings")
        env["JUPYTERLAB_WORKSPACES_DIR"] = str(self._state_dir / "lab-workspaces")
        env["IPYTHONDIR"] = str(self._state_dir / "ipython")
        env["PYTHONUNBUFFERED"] = "1"
        env.pop("JUPYTER_TOKEN", None)
        env.update(self.env_overrides)
        return env

    def start(self) -> JupyterLabServer:
        if self.proc is not None:
            raise RuntimeError("server already started")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_fh = open(self.log_path, "ab", buffering=0)  # noqa: SIM115 - closed in stop()
        for attempt in range(3):
            self._launch()
            try:
                self._wait_ready()
                return self
            except _PortTaken:
                # free_port() raced with another process: pick a new port
                self.stop(close_log=False)
                if attempt == 2:
                    self._close_log()
                    raise self.fail("could not bind a free port in 3 attempts") from None
                self.port = free_port()
            except BaseException:
                self.stop()
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _launch(self) -> None:
        cmd = self.command()
        self._log_offset = self.log_path.stat().st_size
        self._log_fh.write(("$ " + " ".join(cmd) + "\n").encode())
        self.proc = subprocess.Popen(
            cmd,
            cwd=str(self.root_dir),
            env=self._environ(),
            stdin=subprocess.DEVNULL,
            stdout=self._log_fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group -> killpg at exit
            preexec_fn=_die_with_parent,
        )

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.startup_timeout
        last_err: Exception | None = None
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                with open(self.log_path, "rb") as fh:
                    fh.seek(self._log_offset)
                    if b"already in use" in fh.read():
                        raise _PortTaken()
                raise self.fail(f"jupyterlab exited early with code {rc}")
            try:
                status = self.api("GET", "/api/status", timeout=5)
                if isinstance(status, dict) and "started" in status:
                    return
            except (urllib.error.URLError, OSError, ValueError) as exc:
                last_err = exc
            time.sleep(0.3)
        raise self.fail(
            f"jupyterlab did not answer /api/status within {self.startup_timeout:.0f}s "
            f"(last error: {last_err!r})"
        )

    def api(self, method: str, path: str, body: Any = None, timeout: float = 10) -> Any:
        """Call the server REST API with the token; returns decoded JSON (or None)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.base_url + path,
            data=data,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        # never go through a proxy, even if the environment defines one
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(req, timeout=timeout) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def _close_log(self) -> None:
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None

    def stop(self, close_log: bool = True) -> None:
        """Shut down kernels and server; always kills the whole process group."""
        proc, self.proc = self.proc, None
        if proc is None:
            if close_log:
                self._close_log()
            return
        try:
            if proc.poll() is None:
                self._known_children.update(_descendants(proc.pid))
                # 1) graceful: the server shuts its kernels down itself
                with contextlib.suppress(Exception):
                    self.api("POST", "/api/shutdown", timeout=5)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=15)
            # 2) SIGTERM then SIGKILL the server's process group
            if proc.poll() is None:
                _killpg_quietly(proc.pid, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=10)
            _killpg_quietly(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
            # 3) kernels run in their own sessions (jupyter_client uses
            #    start_new_session=True): kill any that survived, by pid.
            for pid in self._known_children:
                _kill_quietly(pid, signal.SIGKILL)
        finally:
            if close_log:
                self._close_log()

    def snapshot_children(self) -> None:
        """Remember current descendants (kernels) so stop() can reap them."""
        if self.proc is not None and self.proc.poll() is None:
            self._known_children.update(_descendants(self.proc.pid))

    def cleanup_state(self) -> None:
        shutil.rmtree(self._state_dir, ignore_errors=True)

    def __enter__(self) -> JupyterLabServer:
        return self.start()

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.stop()
        if exc_type is None:  # keep the log (in the state dir) for post-mortems
            self.cleanup_state()


# --------------------------------------------------------------------------- #
# Chromium via Playwright
# --------------------------------------------------------------------------- #


class ChromiumBrowser:
    """System Chromium (headless) in a fresh, empty user-data-dir.

    ``with ChromiumBrowser() as b: page = b.page``

    Playwright's sync API allows only one ``sync_playwright()`` per thread at a
    time: to run several browsers at once, start one yourself and pass it as
    ``playwright=`` (it is then not stopped by this object).
    """

    def __init__(
        self,
        executable_path: str = CHROMIUM_PATH,
        *,
        playwright: Any = None,
        viewport: tuple[int, int] = (1400, 1000),
        extra_args: list[str] | None = None,
        default_timeout_ms: float = 30_000,
    ) -> None:
        self.executable_path = executable_path
        self.viewport = viewport
        self.extra_args = list(extra_args or [])
        self.default_timeout_ms = default_timeout_ms
        self.user_data_dir = Path(tempfile.mkdtemp(prefix="airun-chromium-profile-"))
        self._pw_cm: Any = None
        self.playwright: Any = playwright
        self.context: Any = None
        self.page: Any = None
        self.console: list[str] = []

    def start(self) -> ChromiumBrowser:
        from playwright.sync_api import sync_playwright

        if not os.path.exists(self.executable_path):
            raise HarnessError(f"Chromium not found at {self.executable_path}")
        if self.playwright is None:
            self._pw_cm = sync_playwright()
            self.playwright = self._pw_cm.__enter__()
        try:
            self.context = self.playwright.chromium.launch_persistent_context(
                str(self.user_data_dir),
                executable_path=self.executable_path,
                headless=True,
                args=[*CHROMIUM_ARGS, *self.extra_args],
                viewport={"width": self.viewport[0], "height": self.viewport[1]},
                timeout=60_000,
                accept_downloads=False,
                service_workers="block",
            )
            self.context.set_default_timeout(self.default_timeout_ms)
            self.page = self.context.pages[0] if self.context.pages else self.context.new_page()
            self.page.on(
                "console",
                lambda msg: self.console.append(f"[{msg.type}] {msg.text}"[:500]),
            )
            self.page.on("pageerror", lambda err: self.console.append(f"[pageerror] {err}"[:500]))
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        try:
            if self.context is not None:
                with contextlib.suppress(Exception):
                    self.context.close()
        finally:
            self.context = None
            self.page = None
            if self._pw_cm is not None:
                with contextlib.suppress(Exception):
                    self._pw_cm.__exit__(None, None, None)
                self._pw_cm = None
                self.playwright = None
            shutil.rmtree(self.user_data_dir, ignore_errors=True)

    def __enter__(self) -> ChromiumBrowser:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------- #
# Notebook-level page helpers
# --------------------------------------------------------------------------- #

# JS: state of the current notebook panel via window.jupyterapp
_JS_NB_STATE = """
() => {
  const app = window.jupyterapp;
  const dialogs = Array.from(document.querySelectorAll('.jp-Dialog .jp-Dialog-header'))
      .map(e => (e.textContent || '').trim());
  if (!app || !app.shell) return {ready: false, why: 'no jupyterapp', dialogs};
  const w = app.shell.currentWidget;
  if (!w || !w.sessionContext || !w.content) return {ready: false, why: 'no notebook widget', dialogs};
  const sc = w.sessionContext;
  const kernel = sc.session && sc.session.kernel;
  const prompts = Array.from(w.node.querySelectorAll('.jp-InputArea-prompt'))
      .map(e => (e.textContent || '').trim());
  return {
    ready: true,
    path: w.context ? w.context.path : null,
    kernel: kernel ? kernel.name : null,
    status: kernel ? kernel.status : null,
    connection: kernel ? kernel.connectionStatus : null,
    display: sc.kernelDisplayStatus,
    pending: prompts.filter(p => p.includes('*')).length,
    cells: w.content.widgets.length,
    dialogs,
  };
}
"""


class LabPage:
    """Drives one JupyterLab tab (a Playwright ``Page``) for one server."""

    def __init__(self, page: Any, server: JupyterLabServer) -> None:
        self.page = page
        self.server = server

    # -- diagnostics -------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        try:
            return self.page.evaluate(_JS_NB_STATE)
        except Exception as exc:  # navigation in progress etc.
            return {"ready": False, "why": f"evaluate failed: {exc}"}

    def fail(self, message: str) -> HarnessError:
        return self.server.fail(f"{message}\nnotebook state: {self._state()}")

    # -- navigation --------------------------------------------------------
    def open_notebook(self, relpath: str, timeout: float = DEFAULT_NOTEBOOK_TIMEOUT) -> None:
        """Open ``relpath`` (relative to the server root) and wait for an idle kernel."""
        deadline = time.monotonic() + timeout
        self.page.goto(
            self.server.notebook_url(relpath),
            wait_until="domcontentloaded",
            timeout=timeout * 1000,
        )
        try:
            self.page.wait_for_function(
                "() => !!(window.jupyterapp && window.jupyterapp.shell)",
                timeout=max(1.0, deadline - time.monotonic()) * 1000,
            )
            self.page.locator(".jp-NotebookPanel .jp-Notebook").first.wait_for(
                state="visible", timeout=max(1.0, deadline - time.monotonic()) * 1000
            )
        except Exception as exc:
            raise self.fail(f"notebook {relpath!r} did not appear: {exc}") from None
        want = relpath.lstrip("/")
        while True:
            st = self._state()
            if (
                st.get("ready")
                and st.get("path") == want
                and st.get("status") == "idle"
                and st.get("connection") == "connected"
            ):
                return
            if time.monotonic() > deadline:
                raise self.fail(f"kernel for {relpath!r} not idle within {timeout:.0f}s")
            time.sleep(0.25)

    # -- execution ---------------------------------------------------------
    def run_all(self, wait: bool = True, timeout: float = DEFAULT_IDLE_TIMEOUT) -> None:
        """Run all cells with the JupyterLab command ``notebook:run-all-cells``.

        The command is fired without blocking on its promise (a cell that
        blocks must not hang the harness); the promise's settlement is recorded
        in ``window.__airunRunAll``.  With ``wait=True`` we then wait (bounded
        by ``timeout``) until that promise settled, no cell shows ``[*]`` and
        the kernel is idle.  Falls back to real clicks on "Run > Run All
        Cells" if ``window.jupyterapp`` is not exposed.
        """
        deadline = time.monotonic() + timeout
        ok = self.page.evaluate(
            """() => {
                 const app = window.jupyterapp;
                 if (!app || !app.commands.hasCommand('notebook:run-all-cells')) return false;
                 const st = window.__airunRunAll = {done: false, result: null, error: null};
                 app.commands.execute('notebook:run-all-cells').then(
                   r => { st.done = true; st.result = r; },
                   e => { st.done = true; st.error = String(e); console.error(e); });
                 return true;
               }"""
        )
        prompts = """() => [...document.querySelectorAll(
                 '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-InputPrompt')].map(p => p.textContent)"""
        before = None if ok else self.page.evaluate(prompts)
        if not ok:
            self._run_all_via_menu()
        if not wait:
            return
        if ok:
            try:
                self.page.wait_for_function(
                    "() => window.__airunRunAll && window.__airunRunAll.done",
                    timeout=max(1.0, deadline - time.monotonic()) * 1000,
                    polling=100,
                )
            except Exception:
                raise self.fail(f"run-all cells did not finish within {timeout:.0f}s") from None
            err = self.page.evaluate("() => window.__airunRunAll.error")
            if err:
                raise self.fail(f"notebook:run-all-cells failed: {err}")
        else:
            # the menu marks cells queued ([*]) or runs them ([n]): wait until a prompt changed
            try:
                self.page.wait_for_function(
                    f"before => JSON.stringify(({prompts})()) !== JSON.stringify(before)",
                    arg=before,
                    timeout=max(1.0, deadline - time.monotonic()) * 1000,
                    polling=100,
                )
            except Exception:
                raise self.fail("Run All Cells from the menu queued no cell") from None
        self.wait_idle(max(1.0, deadline - time.monotonic()))

    def _run_all_via_menu(self) -> None:
        """Fallback: real clicks on the "Run > Run All Cells" menu."""
        self.page.locator(".jp-NotebookPanel .jp-Notebook").first.click()
        self.page.get_by_role("menuitem", name="Run", exact=True).click()
        self.page.get_by_role("menuitem", name=re.compile(r"^Run All Cells")).click()

    def wait_idle(self, timeout: float = DEFAULT_IDLE_TIMEOUT, settle: float = 0.6) -> None:
        """Wait until the kernel is idle and no cell is pending, stable for ``settle`` s."""
        deadline = time.monotonic() + timeout
        stable_since: float | None = None
        while True:
            st = self._state()
            idle = st.get("ready") and st.get("status") == "idle" and st.get("pending") == 0
            now = time.monotonic()
            if idle:
                stable_since = stable_since or now
                if now - stable_since >= settle:
                    return
            else:
                stable_since = None
            if now > deadline:
                raise self.fail(f"notebook not idle within {timeout:.0f}s")
            time.sleep(0.15)

    # -- widgets -----------------------------------------------------------
    def button_locator(self, text: str) -> Any:
        pattern = re.compile(rf"^\s*{re.escape(text)}\s*$")
        return (
            self.page.locator(".jp-NotebookPanel .jp-OutputArea-output")
            .locator("button.widget-button, .jupyter-widgets button")
            .filter(has_text=pattern)
        )

    def click_button(self, text: str, timeout: float = 30.0, index: int = -1) -> None:
        """Real mouse click on the widget button labelled exactly ``text``.

        With several matches, ``index`` picks one (default: the last, i.e. the
        most recently rendered output)."""
        loc = self.button_locator(text)
        deadline = time.monotonic() + timeout
        while loc.count() == 0:
            if time.monotonic() > deadline:
                labels = self.page.locator(
                    ".jp-NotebookPanel .jp-OutputArea-output button"
                ).all_inner_texts()
                raise self.fail(
                    f"no widget button {text!r} within {timeout:.0f}s; buttons: {labels!r}"
                )
            time.sleep(0.2)
        target = loc.nth(index)
        remaining_ms = max(1.0, deadline - time.monotonic()) * 1000
        try:
            target.scroll_into_view_if_needed(timeout=remaining_ms)
            # Playwright's click: waits visible/stable/enabled/receives events,
            # then moves the real mouse and presses/releases it.
            target.click(timeout=remaining_ms)
        except Exception as exc:
            raise self.fail(f"clicking widget button {text!r} failed: {exc}") from None

    # -- reading -----------------------------------------------------------
    def output_text(self) -> str:
        """Text of every output area of the current notebook, in cell order."""
        return self.page.evaluate(
            """() => Array.from(
                 document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output'))
               .map(e => e.innerText).join('\\n')"""
        )

    def screenshot(self, path: Path | str, full_page: bool = True) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(p), full_page=full_page)
        return p

    def element_screenshot(self, locator: Any, path: Path | str, timeout: float = 30.0) -> Path:
        """A screenshot of one element (scrolled into view first).

        Outputs are redrawn in place while a run is live, so an element may be replaced between
        finding it and taking the picture: that is retried until ``timeout``."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout
        while True:
            try:
                locator.scroll_into_view_if_needed(timeout=5_000)
                locator.screenshot(path=str(p), timeout=5_000, animations="disabled")
                return p
            except Exception as exc:
                if time.monotonic() > deadline:
                    raise self.fail(f"no screenshot of {locator}: {exc}") from None
                time.sleep(0.1)
