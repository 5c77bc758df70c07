"""A gate's notification in the formats of chat incoming webhooks: Slack and Microsoft Teams.

``notify: {url: https://hooks.slack.com/services/..., format: slack}`` (or ``teams``) sends the
gate as a message those services draw: the message, who may decide, the form's fields and the
options, the deadline, the terminal commands, and the signed link to the gate's page (the link
finds the gate; the person still logs in).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

FORMATS = ("json", "slack", "teams")


def _lines(payload: Mapping[str, Any]) -> list[tuple[str, str]]:
    facts = [("Run", f"{payload.get('run_id')} ({payload.get('workflow')})")]
    facts.append(("May decide", str(payload.get("who_may_decide") or "anyone")))
    fields = payload.get("fields") or {}
    if fields:
        facts.append(
            (
                "Form",
                ", ".join(
                    f"{name} ({spec.get('type')}{', required' if spec.get('required') else ''})"
                    for name, spec in fields.items()
                ),
            )
        )
    if payload.get("options"):
        facts.append(("Options", " / ".join(payload["options"])))
    facts.append(("Deadline", str(payload.get("deadline") or "none")))
    commands = payload.get("commands") or {}
    if commands:
        facts.append(("From a terminal", f"{commands.get('approve')} | {commands.get('reject')}"))
    return facts


def slack(payload: Mapping[str, Any]) -> dict[str, Any]:
    """A Slack incoming-webhook message (Block Kit, with a plain-text fallback)."""
    title = f"Approval needed: {payload.get('message')}"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": f"*{name}*\n{_plain(value)}"}
                for name, value in _lines(payload)
            ][:10],
        },
    ]
    if payload.get("preview"):
        blocks.append(
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": f"```{str(payload['preview'])[:2500]}```"},
            }
        )
    if payload.get("link"):
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Open the gate"},
                        "url": payload["link"],
                    }
                ],
            }
        )
    return {"text": title, "blocks": blocks}


def teams(payload: Mapping[str, Any]) -> dict[str, Any]:
    """A Microsoft Teams incoming-webhook message (an Adaptive Card attachment)."""
    body: list[dict[str, Any]] = [
        {
            "type": "TextBlock",
            "size": "Medium",
            "weight": "Bolder",
            "wrap": True,
            "text": f"Approval needed: {payload.get('message')}",
        },
        {
            "type": "FactSet",
            "facts": [{"title": name, "value": value} for name, value in _lines(payload)],
        },
    ]
    if payload.get("preview"):
        body.append(
            {
                "type": "TextBlock",
                "wrap": True,
                "fontType": "Monospace",
                "text": str(payload["preview"])[:2500],
            }
        )
    card: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
    }
    if payload.get("link"):
        card["actions"] = [
            {"type": "Action.OpenUrl", "title": "Open the gate", "url": payload["link"]}
        ]
    return {
        "type": "message",
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "content": card}
        ],
    }


def render(fmt: str, payload: Mapping[str, Any]) -> dict[str, Any]:
    """The body to POST for ``fmt`` (``json``: the payload itself)."""
    if fmt == "slack":
        return slack(payload)
    if fmt == "teams":
        return teams(payload)
    return dict(payload)


def _plain(value: str) -> str:
    """Text for Slack mrkdwn: its three control characters escaped."""
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
