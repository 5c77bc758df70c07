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
workflow rule wins. :func:`load` gives the :class:`FirstMatch` rules that
:class:`airun_nb.governance.policy.Policy` consults before its own rules.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from airun_nb import capabilities
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
_V1_KEYS = {"principal", "capabilities", "action", "name", "description", "rule_id"}
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


@dataclass
class SeedRule:
    name: str
    principal: str
    capabilities: list[str]
    decision: str
    risk: str | None = None

    def matches(self, principals: set[str], capability: str, risk: str) -> bool:
        if not any(fnmatch.fnmatchcase(p, self.principal) for p in principals):
            return False
        if self.risk is not None and risk != self.risk:
            return False
        names = _names_of(capability)
        return any(fnmatch.fnmatchcase(n, c) for n in names for c in self.capabilities)


def _names_of(capability: str) -> set[str]:
    real = capabilities.canonical(capability)
    names = {capability, real, *(a for a, t in capabilities.ALIASES.items() if t == real)}
    names |= {old for old, new in OLD_IDS.items() if capabilities.canonical(new) == real}
    return names


@dataclass
class FirstMatch:
    """A seed file's rules: tried in order, the first that matches decides."""

    default: str
    rules: list[SeedRule] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)  # rules no known capability matches

    def decide(self, principal: str, capability: str, risk: str) -> tuple[str, str | None]:
        """(decision, rule name or None for the default)."""
        names = {principal}
        if ":" not in principal:
            names.add(f"user:{principal}")
        for rule in self.rules:
            if rule.matches(names, capability, risk):
                decision = rule.decision
                if decision == "allow" and risk in ("high", "critical"):
                    decision = "require_approval"  # the old risk-based escalation
                return decision, rule.name
        return self.default, None


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


def load(doc: Mapping[str, Any], *, source: str, known: Iterable[str]) -> FirstMatch:
    """The :class:`FirstMatch` rules of a loaded seed policy document; ``known`` are the
    capability names a rule may match today (rules matching none are listed, not refused)."""
    unknown = set(doc) - {"default", "rules", "version", "description"}
    if unknown:
        raise SeedPolicyError(f"{source}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    default = _decision(doc.get("default", "DENY"), source, "default")
    rules_raw = doc.get("rules") or []
    if not isinstance(rules_raw, list):
        raise SeedPolicyError(f"{source}: 'rules' must be a list")
    known = set(known)
    out = FirstMatch(default)
    for i, raw in enumerate(rules_raw):
        where = f"{source} rule #{i + 1}"
        if not isinstance(raw, Mapping):
            raise SeedPolicyError(f"{where}: a rule is a mapping")
        principal = raw.get("principal")
        if not isinstance(principal, str) or not principal:
            raise SeedPolicyError(f"{where}: 'principal' must be a name such as agent:x or user:*")
        level = None
        if "when" in raw:
            bad = set(raw) - _V2_KEYS
            when = raw["when"]
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
        if bad:
            raise SeedPolicyError(f"{where}: unknown key(s) {', '.join(sorted(map(str, bad)))}")
        name = str(raw.get("name") or raw.get("rule_id") or f"#{i + 1}")
        if not any(fnmatch.fnmatchcase(k, c) for k in known for c in caps):
            out.unmatched.append(f"{where} ({', '.join(caps)})")
        out.rules.append(SeedRule(name, principal, caps, decision, level))
    return out


def as_native(rules: FirstMatch) -> dict[str, Any]:
    """The closest native policy document (for ``airun convert``): native rules are all
    considered at once, so first-match order is kept only where it does not matter."""
    out: list[dict[str, Any]] = []
    for r in rules.rules:
        rule: dict[str, Any] = {
            "name": r.name,
            "principals": [r.principal],
            "capabilities": r.capabilities,
            "decision": r.decision,
        }
        if r.risk:
            rule["risk"] = r.risk
        out.append(rule)
    return {"default": rules.default, "rules": out}
