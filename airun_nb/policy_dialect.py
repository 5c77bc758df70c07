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
workflow rule wins.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import capabilities
from .policy import DECISIONS, RISK_ORDER, Policy, PolicyError, Rule, Verdict, known_capabilities

SEED_DECISIONS = {"allow": "allow", "deny": "deny", "require_approval": "require_approval"}
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
class SeedPolicy(Policy):
    """A policy from a seed file: ordered rules, first match wins, risk escalation."""

    seed_rules: list[SeedRule] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)  # rules no known capability matches

    @property
    def active(self) -> bool:
        return True

    def evaluate(self, principal: str, capability: str, risk: str) -> Verdict:
        names = {principal}
        if ":" not in principal:
            names.add(f"user:{principal}")
        verdict = Verdict(self.default, None, None, principal, capability, risk)
        for rule in self.seed_rules:
            if rule.matches(names, capability, risk):
                decision = rule.decision
                if decision == "allow" and RISK_ORDER.get(risk, 1) >= RISK_ORDER["high"]:
                    decision = "require_approval"  # the old risk-based escalation
                verdict = Verdict(decision, rule.name, None, principal, capability, risk)
                break
        mine = self.roles_of(principal)
        for extra in self.rules:  # a workflow's own rules: only tightening
            if extra.matches(principal, mine, capability, risk) and DECISIONS.index(
                extra.decision
            ) > DECISIONS.index(verdict.decision):
                verdict = Verdict(
                    extra.decision, extra.name, extra.approvers, principal, capability, risk
                )
        return verdict

    def tightened(self, extra: Mapping[str, Any] | None, *, where: str = "workflow") -> Policy:
        if not extra:
            return self
        native = Policy(self.roles, "allow", [], self.source).tightened(extra, where=where)
        stricter = self.default
        if DECISIONS.index(native.default) > DECISIONS.index(stricter):
            stricter = native.default
        return SeedPolicy(
            self.roles,
            stricter,
            [*self.rules, *native.rules],
            self.source,
            seed_rules=self.seed_rules,
            unmatched=self.unmatched,
        )


def _decision(value: Any, where: str, key: str) -> str:
    decision = SEED_DECISIONS.get(str(value).strip().lower())
    if decision is None:
        raise PolicyError(f"{where}: {key} must be ALLOW, DENY or REQUIRE_APPROVAL, got {value!r}")
    return decision


def _patterns(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise PolicyError(f"{where}: 'capabilities' must be a non-empty list of ids")
    out = []
    for v in value:
        out.append(v)
        if v in OLD_IDS:
            out.append(OLD_IDS[v])
    return out


def load(doc: Mapping[str, Any], *, source: str) -> SeedPolicy:
    """A :class:`SeedPolicy` from a loaded seed policy document."""
    unknown = set(doc) - {"default", "rules", "version", "description", "roles"}
    if unknown:
        raise PolicyError(f"{source}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    default = _decision(doc.get("default", "DENY"), source, "default")
    rules_raw = doc.get("rules") or []
    if not isinstance(rules_raw, list):
        raise PolicyError(f"{source}: 'rules' must be a list")
    rules: list[SeedRule] = []
    unmatched: list[str] = []
    known = known_capabilities()
    for i, raw in enumerate(rules_raw):
        where = f"{source} rule #{i + 1}"
        if not isinstance(raw, Mapping):
            raise PolicyError(f"{where}: a rule is a mapping")
        principal = raw.get("principal")
        if not isinstance(principal, str) or not principal:
            raise PolicyError(f"{where}: 'principal' must be a name such as agent:x or user:*")
        if "when" in raw:
            bad = set(raw) - _V2_KEYS
            when = raw["when"]
            if not isinstance(when, Mapping) or set(when) - {"capability", "risk_level"}:
                raise PolicyError(f"{where}: 'when' takes capability and risk_level")
            caps = _patterns(when.get("capability", "*"), where)
            risk = when.get("risk_level")
            if risk is not None and str(risk).lower() not in RISK_ORDER:
                raise PolicyError(f"{where}: risk_level must be LOW, MEDIUM, HIGH or CRITICAL")
            decision = _decision(raw.get("decision"), where, "decision")
            level = None if risk is None else str(risk).lower()
        else:
            bad = set(raw) - _V1_KEYS
            caps = _patterns(raw.get("capabilities"), where)
            decision = _decision(raw.get("action"), where, "action")
            level = None
        if bad:
            raise PolicyError(f"{where}: unknown key(s) {', '.join(sorted(map(str, bad)))}")
        name = str(raw.get("name") or raw.get("rule_id") or f"#{i + 1}")
        if not any(fnmatch.fnmatchcase(k, c) for k in known for c in caps):
            unmatched.append(f"{where} ({', '.join(caps)})")
        rules.append(SeedRule(name, principal, caps, decision, level))
    return SeedPolicy({}, default, [], source, seed_rules=rules, unmatched=unmatched)


def as_native(policy: SeedPolicy) -> dict[str, Any]:
    """The closest native policy document (for ``airun convert``): native rules are all
    considered at once, so first-match order is kept only where it does not matter."""
    rules: list[dict[str, Any]] = []
    for r in policy.seed_rules:
        rule: dict[str, Any] = {
            "name": r.name,
            "principals": [r.principal],
            "capabilities": r.capabilities,
            "decision": r.decision,
        }
        if r.risk:
            rule["risk"] = r.risk
        rules.append(rule)
    return {"default": policy.default, "rules": rules}


__all__ = ["Rule", "SeedPolicy", "SeedRule", "as_native", "is_seed_policy", "load"]
