"""A seed workflow's per-agent ``policy:`` list, as rules that tighten the configured policy.

Each entry names an ``agent_name`` and may give ``allowed_capabilities``,
``denied_capabilities``, ``requires_approval_for``, ``allowed_environments``, ``max_retries``
(total attempts) and ``timeout_seconds``. The workflow's steps are known when it is parsed, so
every step of that agent whose capability is outside its list (or whose environment is not
allowed) gets a deny rule for ``agent:<name>``; ``max_retries`` and ``timeout_seconds`` cap the
agent's steps. An empty or missing ``allowed_capabilities`` list restricts nothing.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from typing import Any

from airun_nb.capabilities import canonical
from airun_nb.errors import SpecError

ErrorAt = Callable[[str, list[Any]], SpecError]
ENTRY_KEYS = {
    "agent_name",
    "rule_id",
    "allowed_capabilities",
    "denied_capabilities",
    "requires_approval_for",
    "allowed_environments",
    "max_retries",
    "timeout_seconds",
}
DEFAULT_ENVIRONMENT = "dev"  # the old WorkflowMetadata default


def _names(value: Any, where: list[Any], error: ErrorAt) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise error("must be a list of names", where)
    return value


def _matches(cap: str, patterns: list[str]) -> bool:
    names = {cap, canonical(cap)}
    return any(
        fnmatch.fnmatchcase(n, canonical(p)) or fnmatch.fnmatchcase(n, p)
        for n in names
        for p in patterns
    )


def agent_rules(
    items: list[Any], steps: list[dict[str, Any]], environment: Any, error: ErrorAt
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Native policy rules, and per-agent limits (``attempts``, ``timeout``)."""
    rules: list[dict[str, Any]] = []
    limits: dict[str, dict[str, Any]] = {}
    env = str(environment or DEFAULT_ENVIRONMENT)
    for i, entry in enumerate(items):
        where: list[Any] = ["policy", i]
        if not isinstance(entry, dict) or not isinstance(entry.get("agent_name"), str):
            raise error("each policy entry is a mapping with an 'agent_name'", where)
        unknown = set(entry) - ENTRY_KEYS
        if unknown:
            raise error(f"unknown key '{sorted(map(str, unknown))[0]}' in a policy entry", where)
        agent = entry["agent_name"]
        allowed = _names(entry.get("allowed_capabilities"), [*where, "allowed_capabilities"], error)
        denied = _names(entry.get("denied_capabilities"), [*where, "denied_capabilities"], error)
        approval = _names(
            entry.get("requires_approval_for"), [*where, "requires_approval_for"], error
        )
        envs = entry.get("allowed_environments")
        envs = None if envs is None else _names(envs, [*where, "allowed_environments"], error)
        used = sorted(
            {str(s["capability"]) for s in steps if s.get("agent") == agent and s.get("capability")}
        )
        principal = [f"agent:{agent}"]
        for cap in used:
            why = None
            if envs is not None and env not in envs:
                why = f"environment '{env}' is not in its allowed_environments"
            elif allowed and not _matches(cap, allowed):
                why = "it is not in its allowed_capabilities"
            elif denied and _matches(cap, denied):
                why = "it is in its denied_capabilities"
            if why:
                rules.append(
                    {
                        "name": f"agent {agent} may not use {cap}: {why}",
                        "principals": principal,
                        "capabilities": [canonical(cap)],
                        "decision": "deny",
                    }
                )
            elif approval and _matches(cap, approval):
                rules.append(
                    {
                        "name": f"agent {agent} needs approval for {cap}",
                        "principals": principal,
                        "capabilities": [canonical(cap)],
                        "decision": "require_approval",
                    }
                )
        lim: dict[str, Any] = {}
        if entry.get("max_retries") is not None:
            n = entry["max_retries"]
            if not isinstance(n, int) or isinstance(n, bool) or n < 0:
                raise error("'max_retries' must be a whole number", [*where, "max_retries"])
            lim["attempts"] = max(1, n)
        if entry.get("timeout_seconds") is not None:
            t = entry["timeout_seconds"]
            if not isinstance(t, (int, float)) or isinstance(t, bool) or t <= 0:
                raise error(
                    "'timeout_seconds' must be a positive number", [*where, "timeout_seconds"]
                )
            lim["timeout"] = t
        limits[agent] = lim
    return rules, limits
