"""Telling someone that a gate opened: a webhook POST of JSON, or a Python callable.

A notify target is an action like any other: the caller's ``check`` (the policy, through
:mod:`airun_nb.governance.mediator`) decides each one first, a webhook goes through the egress
checks of ``http.request`` (``egress``: metadata addresses, the policy's ``hosts:``, every
redirect), and a ``module:function`` is resolved like a ``call:`` step's target."""

from __future__ import annotations

import json
import logging
import urllib.request
from collections.abc import Callable
from typing import Any

from airun_nb.capabilities import network
from airun_nb.gates import chat
from airun_nb.spec.approval import ApprovalError

log = logging.getLogger("airun_nb.gates.gate")


def notify(
    target: Any,
    payload: dict[str, Any],
    resolve: Callable[[str], Callable[..., Any]],
    *,
    check: Callable[[Any], str | None] | None = None,
    egress: Any = None,
) -> str | None:
    """Tell someone a gate opened: POST JSON to a URL, or call a function. Never raises.

    Returns an error description when notifying failed (the caller records it), else None.
    """
    targets = target if isinstance(target, list) else [target]
    errors = []
    for t in targets:
        try:
            refused = check(t) if check is not None else None
            if refused is not None:
                raise ApprovalError(refused)
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
                opener = urllib.request.build_opener()
                if egress is not None:
                    network.check_destination(url, egress)
                    opener = urllib.request.build_opener(network._CheckedRedirects(egress))
                with opener.open(req, timeout=5) as resp:
                    resp.read()
            elif isinstance(t, str):
                resolve(t)(payload)
            else:
                raise ApprovalError(
                    f"cannot notify {t!r}: give a URL, a function, or {{url: URL, format: "
                    f"{' | '.join(chat.FORMATS)}}}"
                )
        except (Exception, SystemExit) as exc:  # a target that exits does not end the run
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
