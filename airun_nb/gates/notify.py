"""Telling someone that a gate opened: a webhook POST of JSON, or a Python callable."""

from __future__ import annotations

import json
import logging
import urllib.request
from collections.abc import Callable
from typing import Any

from airun_nb.gates import chat
from airun_nb.gates.config import ApprovalError

log = logging.getLogger("airun_nb.gates.gate")


def notify(
    target: Any,
    payload: dict[str, Any],
    resolve: Callable[[str], Callable[..., Any]],
) -> str | None:
    """Tell someone a gate opened: POST JSON to a URL, or call a function. Never raises.

    Returns an error description when notifying failed (the caller records it), else None.
    """
    targets = target if isinstance(target, list) else [target]
    errors = []
    for t in targets:
        try:
            if callable(t):
                t(payload)
            elif (isinstance(t, str) and t.startswith(("http://", "https://"))) or _chat(t):
                url, fmt = (t["url"], t.get("format", "json")) if _chat(t) else (t, "json")
                req = urllib.request.Request(
                    url,
                    data=json.dumps(chat.render(fmt, payload), default=str).encode(),
                    headers={"Content-Type": "application/json"},
                    method="POST",
                )
                with urllib.request.urlopen(req, timeout=5) as resp:
                    resp.read()
            elif isinstance(t, str):
                resolve(t)(payload)
            else:
                raise ApprovalError(
                    f"cannot notify {t!r}: give a URL, a function, or {{url: URL, format: "
                    f"{' | '.join(chat.FORMATS)}}}"
                )
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}"
            log.warning("airun_nb: notifying %s failed: %s", t, message)
            errors.append(f"{t}: {message}")
    return "; ".join(errors) or None


def _chat(t: Any) -> bool:
    """``{url: https://..., format: slack | teams | json}``: a chat incoming webhook."""
    return (
        isinstance(t, dict)
        and isinstance(t.get("url"), str)
        and t["url"].startswith(("http://", "https://"))
        and t.get("format", "json") in chat.FORMATS
    )
