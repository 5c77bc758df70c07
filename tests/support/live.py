"""A real kernel driven through jupyter_client, keeping every iopub message it sends.

Unlike nbclient, this keeps listening between cells, so a test can see what the kernel
publishes while it is idle (a gate continued by a decision from elsewhere).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jupyter_client.manager import KernelManager


class LiveKernel:
    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.km = KernelManager(kernel_name="python3", transport="ipc")
        self.km.connection_file = str(cwd / "kernel.json")
        self.km.ip = str(cwd / "kernel-ipc")
        self.km.start_kernel(cwd=str(cwd), env=env)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)
        self.messages: list[tuple[float, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                msg = self.kc.get_iopub_msg(timeout=0.1)
            except queue.Empty:
                continue
            with self._lock:
                self.messages.append((time.monotonic(), msg))

    def execute(self, code: str, timeout: float = 120) -> str:
        """Run a cell to its end; return its msg_id (errors raise AssertionError)."""
        msg_id = self.kc.execute(code)
        reply = self.kc.get_shell_msg(timeout=timeout)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = self.kc.get_shell_msg(timeout=timeout)
        self.wait_for(lambda: self.idle_after(msg_id), 60, "the cell's idle status")
        if reply["content"]["status"] != "ok":
            raise AssertionError(
                f"{reply['content'].get('ename')}: {reply['content'].get('evalue')}\n"
                + self.text(msg_id)
            )
        return str(msg_id)

    def start(self, code: str) -> str:
        """Send a cell without waiting for it."""
        return str(self.kc.execute(code))

    def idle_after(self, msg_id: str) -> bool:
        return any(
            m["msg_type"] == "status"
            and m["content"].get("execution_state") == "idle"
            and m["parent_header"].get("msg_id") == msg_id
            for _, m in self.snapshot()
        )

    def snapshot(self) -> list[tuple[float, dict[str, Any]]]:
        with self._lock:
            return list(self.messages)

    def outputs(self, msg_id: str | None = None) -> list[tuple[float, str, dict[str, Any]]]:
        """(time, msg_type, content) of every output message (of one cell, if given)."""
        kinds = ("stream", "display_data", "update_display_data", "execute_result", "error")
        return [
            (t, m["msg_type"], m["content"])
            for t, m in self.snapshot()
            if m["msg_type"] in kinds
            and (msg_id is None or m["parent_header"].get("msg_id") == msg_id)
        ]

    def comm_values(self) -> list[tuple[float, dict[str, Any]]]:
        """(time, state) of every widget state update the kernel sent."""
        out = []
        for t, m in self.snapshot():
            if m["msg_type"] == "comm_msg":
                data = m["content"].get("data", {})
                if data.get("method") == "update":
                    out.append((t, data.get("state", {})))
        return out

    def text(self, msg_id: str | None = None) -> str:
        parts = []
        for _, kind, content in self.outputs(msg_id):
            if kind == "stream":
                parts.append(content["text"])
            elif kind == "error":
                parts.append(f"{content['ename']}: {content['evalue']}")
            else:
                parts.append(content.get("data", {}).get("text/plain", ""))
        return "\n".join(parts)

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            time.sleep(0.05)

    def shutdown(self) -> None:
        self._stop.set()
        self._reader.join(timeout=2)
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)
