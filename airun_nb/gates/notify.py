"""Telling someone that a gate opened: a webhook POST of JSON, or a Python callable.

A notify target is an action like any other: the caller's ``check`` (the policy, through
:mod:`airun_nb.governance.mediator`) decides each one first, a webhook goes through the egress
checks of ``http.request`` (``egress``: metadata addresses, the policy's ``hosts:``, every
redirect), and a ``module:function`` is resolved like a ``call:`` step's target."""

from __future__ import annotations

import json
import logging
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from airun_nb.capabilities import network
from airun_nb.gates import chat, gate
from airun_nb.gates import form as forms
from airun_nb.gates import links as gatelinks
from airun_nb.spec.approval import ApprovalError

log = logging.getLogger("airun_nb.gates.gate")


def payload(row: Mapping[str, Any], db: Any) -> dict[str, Any]:
    """What a notification says about a gate (the same for its opening, a reminder and an
    escalation): the message, who may decide, the form, the options, the deadline, the terminal
    commands and the signed link to its page."""
    run_id, gate_id = str(row["run_id"]), str(row["gate_id"])
    spec = gate.form_spec(row)
    return {
        "run_id": run_id,
        "workflow": row.get("workflow"),
        "gate": gate_id,
        "message": row.get("message"),
        "approvers": gate.approver_list(row) if row.get("approvers") else None,
        "deadline": gate.iso_utc(row.get("deadline")),
        "preview": row.get("preview_text"),
        "who_may_decide": gate.who_may_decide(row),
        "fields": {n: f.as_dict() for n, f in forms.fields_of(spec).items()},
        "options": spec.get("options") or [],
        "commands": gate.commands(run_id, gate_id, db=db, row=row),
        "link": gatelinks.approval_link(run_id, gate_id, row.get("deadline"), db=db),
    }


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
