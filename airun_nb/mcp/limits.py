"""What an agent can ask of the MCP server: result sizes, runs per minute, waits, query time.

Defaults here; the owner changes them in the settings (``mcp: {runs_per_minute: 20, ...}``).
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from airun_nb.settings import file as settings

MAX_WAIT_SECONDS = 300.0  # the longest a tool waits for a run (run_workflow, wait_for_run)


@dataclass(frozen=True)
class Limits:
    runs_per_minute: int = 10  # run_workflow calls per minute, per server
    max_result_chars: int = 20_000  # a tool's answer, as JSON
    query_seconds: float = 5.0  # a history query is stopped after this
    max_rows: int = 200  # rows a history query returns
    preview_chars: int = 1_000  # one output, error or gate preview inside an answer
    max_workflow_chars: int = 200_000  # a workflow text sent to validate or run

    @classmethod
    def from_settings(cls) -> Limits:
        """The defaults, with what ``mcp:`` in the settings changes."""
        conf = settings.agent_server()
        return cls(
            runs_per_minute=int(conf.get("runs_per_minute") or cls.runs_per_minute),
            max_result_chars=int(conf.get("max_result_chars") or cls.max_result_chars),
            query_seconds=float(conf.get("query_seconds") or cls.query_seconds),
            max_rows=int(conf.get("max_rows") or cls.max_rows),
        )


class RunRate:
    """A sliding one-minute window of run starts."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._starts: deque[float] = deque()
        self._lock = threading.Lock()

    def take(self) -> bool:
        """Count one start if the window has room; False when it is full."""
        now = time.monotonic()
        with self._lock:
            while self._starts and now - self._starts[0] >= 60.0:
                self._starts.popleft()
            if len(self._starts) >= self.per_minute:
                return False
            self._starts.append(now)
            return True


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return text[:limit] + f"... ({len(text) - limit} more characters)"


def fit(doc: dict[str, Any], limit: int) -> dict[str, Any]:
    """``doc`` made to fit ``limit`` characters of JSON: long lists are cut from the end (the
    answer says so in ``truncated``), then long strings are clipped."""
    if _size(doc) <= limit:
        return doc
    out = json.loads(json.dumps(doc, default=str))
    cut: list[str] = []
    for keep in (50, 20, 5, 1):
        for key, value in list(out.items()):
            if isinstance(value, list) and len(value) > keep:
                out[key] = value[:keep]
                cut.append(f"{key}: first {keep} of {len(value)}")
        if _size(out) <= limit:
            break
    if _size(out) > limit:
        out = _clip_strings(out, 200)
        cut.append("long texts clipped to 200 characters")
    out["truncated"] = "; ".join(dict.fromkeys(cut)) or "cut to fit"
    if _size(out) > limit:  # still too big: keep only what says what the answer was
        out = {k: v for k, v in out.items() if not isinstance(v, (list, dict))}
        out["truncated"] = f"the answer is over {limit} characters; ask for less"
    return out


def _clip_strings(value: Any, limit: int) -> Any:
    if isinstance(value, str):
        return clip(value, limit)
    if isinstance(value, dict):
        return {k: _clip_strings(v, limit) for k, v in value.items()}
    if isinstance(value, list):
        return [_clip_strings(v, limit) for v in value]
    return value


def _size(doc: Any) -> int:
    return len(json.dumps(doc, default=str))
