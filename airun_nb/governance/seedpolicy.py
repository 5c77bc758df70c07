"""The seed runtime's policy files, loaded with the meaning they had.

Two shapes are read, with decisions in any case (``ALLOW``, ``deny``, ``Require_Approval``):

```yaml
default: DENY
rules:                                   # v1
  - principal: "agent:data_processor"
    capabilities: ["io.fs.read_file", "io.fs.*"]
    action: ALLOW
  - when: {capability: "net.http.*", risk_level: HIGH}     # v2
    principal: "agent:*"
    decision: REQUIRE_APPROVAL
```

As in the old runtime, the rules are tried in order and the first that matches decides; an
``allow`` for a step of high or critical risk becomes ``require_approval``; ``default`` decides
when nothing matches. Principal patterns may end in ``*`` (``agent:*``, ``user:*``); the launcher
is matched as ``user:<name>`` as well as by its name. Old capability ids match steps through the
alias table. A workflow's own rules (and a seed workflow's per-agent ``policy:`` list) tighten
this policy the native way: the most restrictive of the first-match decision and every matching
workflow rule wins. :func:`native` gives the native document (``match: first``) that decides
exactly as the seed file; ``airun convert`` prints it and the policy loader reads seed files
through it, so both forms are one set of rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airun_nb.errors import AirunError

SEED_DECISIONS = {"allow": "allow", "deny": "deny", "require_approval": "require_approval"}
RISKS = ("low", "medium", "high", "critical")
# Old ids of the policy files that name a built-in under another name.
OLD_IDS = {
    "sys.get_env": "sys.info.get_env_var",
    "sys.run_command": "sys.exec.run",
    "io.fs.list_directory": "io.fs.list_dir",
    "io.fs.create_directory": "fs.mkdir",
    "io.fs.delete_directory": "fs.delete",
}
_V1_KEYS = {
    *("principal", "capabilities", "conditions", "action", "name", "description", "rule_id")
}
ESCALATED = ("high", "critical")
_V2_KEYS = {"when", "principal", "decision", "name", "description", "rule_id"}


class SeedPolicyError(AirunError):
    """A seed policy file is malformed; the message names the rule."""


def is_seed_policy(doc: Any) -> bool:
    """Is a loaded policy document in the seed shape (upper-case default, principal/action)?"""
    if not isinstance(doc, Mapping):
        return False
    default = doc.get("default")
    if isinstance(default, str) and default != default.lower():
        return True
    rules = doc.get("rules")
    return isinstance(rules, list) and any(
        isinstance(r, Mapping) and ("principal" in r or "action" in r or "when" in r) for r in rules
    )


def _decision(value: Any, where: str, key: str) -> str:
    decision = SEED_DECISIONS.get(str(value).strip().lower())
    if decision is None:
        raise SeedPolicyError(
            f"{where}: {key} must be ALLOW, DENY or REQUIRE_APPROVAL, got {value!r}"
        )
    return decision


def _patterns(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise SeedPolicyError(f"{where}: 'capabilities' must be a non-empty list of ids")
    out = []
    for v in value:
        out.append(v)
        if v in OLD_IDS:
            out.append(OLD_IDS[v])
    return out


def native(doc: Mapping[str, Any], *, source: str) -> dict[str, Any]:
    """The native policy document that decides exactly as a seed policy document: its rules in
    order under ``match: first``, principal patterns as written, old ids with their new names,
    ``risk_level`` as ``risk``, and each ``ALLOW`` preceded by the ``require_approval`` rule the
    old runtime applied to high and critical risk."""
    unknown = set(doc) - {"default", "rules", "version", "description"}
    if unknown:
        raise SeedPolicyError(f"{source}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    default = _decision(doc.get("default", "DENY"), source, "default")
    rules_raw = doc.get("rules") or []
    if not isinstance(rules_raw, list):
        raise SeedPolicyError(f"{source}: 'rules' must be a list")
    out: list[dict[str, Any]] = []
    for i, raw in enumerate(rules_raw):
        where = f"{source} rule #{i + 1}"
        if not isinstance(raw, Mapping):
            raise SeedPolicyError(f"{where}: a rule is a mapping")
        principal = raw.get("principal")
        if not isinstance(principal, str) or not principal:
            raise SeedPolicyError(f"{where}: 'principal' must be a name such as agent:x or user:*")
        level = None
        if "when" in raw or "decision" in raw:
            bad = set(raw) - _V2_KEYS
            when = raw.get("when") or {}
            if not isinstance(when, Mapping) or set(when) - {"capability", "risk_level"}:
                raise SeedPolicyError(f"{where}: 'when' takes capability and risk_level")
            caps = _patterns(when.get("capability", "*"), where)
            if when.get("risk_level") is not None:
                level = str(when["risk_level"]).lower()
                if level not in RISKS:
                    raise SeedPolicyError(
                        f"{where}: risk_level must be LOW, MEDIUM, HIGH or CRITICAL"
                    )
            decision = _decision(raw.get("decision"), where, "decision")
        else:
            bad = set(raw) - _V1_KEYS
            caps = _patterns(raw.get("capabilities"), where)
            decision = _decision(raw.get("action"), where, "action")
            _conditions(raw.get("conditions"), decision, where)
        if bad:
            raise SeedPolicyError(f"{where}: unknown key(s) {', '.join(sorted(map(str, bad)))}")
        name = str(raw.get("name") or raw.get("rule_id") or f"#{i + 1}")
        rule: dict[str, Any] = {"name": name, "principals": [principal], "capabilities": caps}
        if decision == "allow" and level in ESCALATED:
            decision = "require_approval"  # the old risk-based escalation
        elif decision == "allow" and level is None:
            out.append(
                {
                    **rule,
                    "name": f"{name} (high risk needs approval)",
                    "risk": ">= high",
                    "decision": "require_approval",
                }
            )
        if level is not None:
            rule["risk"] = level
        rule["decision"] = decision
        out.append(rule)
    return {"match": "first", "default": default, "rules": out}


def _conditions(value: Any, decision: str, where: str) -> None:
    """The v1 ``conditions:`` mapping, which the old runtime stored and never evaluated. On a
    deny or require_approval rule ignoring it is what it did (and only errs on the strict side);
    an allow with conditions would allow more than it says, so it is refused."""
    if value is None or value == {} or value == []:
        return
    if not isinstance(value, Mapping):
        raise SeedPolicyError(f"{where}: 'conditions' is a mapping")
    if decision == "allow":
        raise SeedPolicyError(
            f"{where}: 'conditions' were never enforced, so this ALLOW allows more than it "
            "says: remove 'conditions' and narrow 'principal'/'capabilities' instead"
        )
