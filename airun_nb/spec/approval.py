"""An approval gate's settings: the ``approval:`` mapping of a step, validated."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airun_nb.errors import AirunError
from airun_nb.spec.durations import parse_duration

MODES = ("suspend", "wait", "policy")
ON_TIMEOUT = ("approve", "reject", "fail")


class ApprovalError(AirunError):
    """A decision was refused (not an approver, four-eyes, gate not open...)."""


class AlreadyDecided(ApprovalError):
    """The gate already has its decision."""


@dataclass
class GateConfig:
    message: Any = None
    show: Any = None
    approvers: list[str] | None = None
    timeout: float | None = None
    on_timeout: str = "reject"
    mode: str | None = None
    allow_self_approval: bool = False
    notify: Any = None
    four_eyes: bool = False  # the launcher may not decide (also implied by approvers)


def parse_config(body: Mapping[str, Any] | None, *, step: str) -> GateConfig:
    """Validate an ``approval:`` mapping (called at parse time and at run time)."""
    body = dict(body or {})
    allowed = {
        "message",
        "show",
        "approvers",
        "timeout",
        "on_timeout",
        "mode",
        "allow_self_approval",
        "four_eyes",
        "notify",
        "description",
    }
    for key in body:
        if key not in allowed:
            raise ApprovalError(
                f"step '{step}': unknown approval key '{key}' (one of {', '.join(sorted(allowed))})"
            )
    approvers = body.get("approvers")
    if isinstance(approvers, str):
        approvers = [approvers]
    if approvers is not None and not (
        isinstance(approvers, list) and all(isinstance(a, str) for a in approvers)
    ):
        raise ApprovalError(f"step '{step}': 'approvers' must be a list of users or role:NAME")
    on_timeout = str(body.get("on_timeout", "reject"))
    if on_timeout not in ON_TIMEOUT:
        raise ApprovalError(f"step '{step}': 'on_timeout' must be one of {', '.join(ON_TIMEOUT)}")
    mode = body.get("mode")
    if mode is not None and mode not in MODES:
        raise ApprovalError(f"step '{step}': 'mode' must be one of {', '.join(MODES)}")
    timeout = body.get("timeout")
    return GateConfig(
        message=body.get("message"),
        show=body.get("show"),
        approvers=approvers,
        timeout=None
        if timeout is None
        else parse_duration(timeout, path=f"steps.{step}.approval.timeout"),
        on_timeout=on_timeout,
        mode=mode,
        allow_self_approval=bool(body.get("allow_self_approval", False)),
        notify=body.get("notify"),
        four_eyes=bool(body.get("four_eyes", False)),
    )
