"""The policy: who may run which capability, at which risk, and who must approve it.

```yaml
roles: {lead: [alice], agent: [llm-bot]}
default: allow                 # allow | deny | require_approval
rules:
  - name: agents-no-code
    principals: [role:agent]
    capabilities: [python.exec, fs.delete]
    decision: deny
  - principals: ["*"]
    capabilities: ["fs.*"]
    risk: ">= high"
    decision: require_approval
    approvers: [role:lead]
```

Every matching rule is considered and the most restrictive decision wins (deny over
require_approval over allow); when no rule matches, ``default`` decides. With ``match: first``
the rules are tried in order and the first that matches decides (the seed runtime's meaning;
``airun convert`` writes seed policy files this way), and a rule may name capabilities nobody
registered yet (``airun validate`` lists them). A principal is a name, ``role:NAME``, ``*``, or
a pattern such as ``agent:*`` or ``user:*``; the launcher ``alice`` is also ``user:alice``. The policy is loaded
from configuration only (``AIRUN_POLICY``, ``%config Workflow.policy``, ``policy:`` in the
settings or ``[tool.airun_nb]``): a workflow may add rules of its own, but only to tighten it.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airun_nb.errors import AirunError
from airun_nb.governance import seedpolicy as policy_dialect
from airun_nb.settings import environment
from airun_nb.settings import file as settings
from airun_nb.settings.environment import current as settings_now

# The capability registry (which imports DuckDB, regex and the built-in families) and the YAML
# reader load when a rule is matched or a policy text is parsed, not with this module: deciding a
# gate with no policy configured (`airun approve`) never needs them.

DECISIONS = ("allow", "require_approval", "deny")
_STRICTNESS = {d: i for i, d in enumerate(DECISIONS)}
RISK_ORDER = {"low": 0, "medium": 1, "high": 2, "critical": 3}
_PATTERN = re.compile(r"^[A-Za-z0-9_.*?\-]+$")
_RISK_CMP = re.compile(r"^\s*(>=|<=|>|<|==)?\s*(low|medium|high|critical)\s*$")

_configured: dict[str, Any] = {}


class PolicyError(AirunError):
    """The policy file is malformed; the message names the rule."""


@dataclass
class Rule:
    name: str
    principals: list[str]
    capabilities: list[str]
    decision: str
    risk: list[tuple[str, int]] | None = None
    approvers: list[str] | None = None
    source: str = "policy"
    hosts: list[str] | None = None  # where http.request may go for these principals
    narrows: bool = False  # a workflow's own rule: its hosts only narrow the configured ones

    def matches(self, principal: str, roles_of: set[str], capability: str, risk: str) -> bool:
        names = principal_names(principal)
        if not any(
            p == "*"
            or (p.startswith("role:") and p[5:] in roles_of)
            or any(fnmatch.fnmatchcase(n, p) for n in names)
            for p in self.principals
        ):
            return False
        names = _names_of(capability)
        if not any(fnmatch.fnmatchcase(n, c) for n in names for c in self.capabilities):
            return False
        if self.risk is not None:
            level = RISK_ORDER.get(risk, 1)
            return any(_compare(level, op, bound) for op, bound in self.risk)
        return True


def principal_names(principal: str) -> set[str]:
    """The names a rule's principal patterns are matched against: a launcher's plain name is
    also ``user:NAME``; ``agent:x`` and ``role:x`` stay as they are."""
    if ":" in principal:
        return {principal}
    return {principal, f"user:{principal}"}


def _names_of(capability: str) -> set[str]:
    """A capability and every alias it is known by (the seed dialect's ids)."""
    from airun_nb import capabilities

    real = capabilities.canonical(capability)
    names = {capability, real, *(a for a, t in capabilities.ALIASES.items() if t == real)}
    old = policy_dialect.OLD_IDS.items()
    return names | {o for o, new in old if capabilities.canonical(new) == real}


@dataclass
class Ordered:
    """The rules of a ``match: first`` policy: tried in order, the first that matches decides."""

    rules: list[Rule]
    unmatched: list[str] = field(default_factory=list)  # rules no known capability matches

    def first(self, principal: str, roles_of: set[str], capability: str, risk: str) -> Rule | None:
        return next(
            (r for r in self.rules if r.matches(principal, roles_of, capability, risk)), None
        )


def known_capabilities() -> set[str]:
    """Every name a rule may match: registered capabilities, their aliases, the step kinds."""
    from airun_nb import capabilities

    return {
        *capabilities.registry._REGISTRY,
        *capabilities.ALIASES,
        *capabilities.KIND_CAPABILITY.values(),
        "gate.decide_as",  # the right to decide a gate as another user (airun_nb.governance.identity)
        *RUN_ACTIONS,  # what an agent asks of a run through `airun mcp`
    }


# Actions on a whole run that the policy decides for an agent (airun_nb.mcp), with their risk.
RUN_ACTIONS = {"run.rollback": "high", "run.cancel": "medium"}


def _compare(level: int, op: str, bound: int) -> bool:
    return {
        ">=": level >= bound,
        "<=": level <= bound,
        ">": level > bound,
        "<": level < bound,
        "==": level == bound,
    }[op]


@dataclass
class Verdict:
    decision: str
    rule: str | None
    approvers: list[str] | None
    principal: str
    capability: str
    risk: str

    @property
    def reason(self) -> str:
        who = f"rule '{self.rule}'" if self.rule else "the policy default"
        return f"{who}: {self.decision} {self.capability} (risk {self.risk}) for {self.principal}"


@dataclass
class Policy:
    roles: dict[str, list[str]] = field(default_factory=dict)
    default: str = "allow"
    rules: list[Rule] = field(default_factory=list)
    source: str = "(no policy)"
    first_match: Ordered | None = None  # the rules of a ``match: first`` policy
    delegators: list[str] = field(default_factory=list)  # ``delegation: {allow: [...]}``

    @property
    def active(self) -> bool:
        """Does this policy decide anything (rules, or a default other than allow)?"""
        return bool(self.rules) or self.default != "allow" or self.first_match is not None

    def roles_of(self, principal: str) -> set[str]:
        return {r for r, members in self.roles.items() if principal in members}

    def may_delegate(self, principal: str) -> bool:
        """May ``principal`` hand their approvals to someone else for a while (``delegation:
        {allow: [role:lead, bob]}``; nobody may unless the configured policy says so)?"""
        mine = self.roles_of(principal)
        for entry in self.delegators:
            if entry in ("*", principal) or (entry.startswith("role:") and entry[5:] in mine):
                return True
        return False

    def hosts_for(self, principal: str, capability: str = "http.request") -> list[str] | None:
        """The hosts ``principal`` may reach with ``capability`` when a matching rule lists
        ``hosts:`` (patterns like ``*.example.com``), else None (no host restriction)."""
        mine = self.roles_of(principal)
        found: list[str] | None = None
        ordered = self.first_match.rules if self.first_match is not None else []
        rules = [r for r in [*ordered, *self.rules] if r.hosts is not None]
        for rule in rules:
            if not rule.narrows and rule.matches(principal, mine, capability, "high"):
                found = [*(found or []), *(rule.hosts or [])]
        # A workflow's rules come last and only narrow: whatever risk they name, their hosts
        # never add a destination the configured rules do not already allow.
        for rule in rules:
            if rule.narrows and rule.matches(principal, mine, capability, "high"):
                found = narrow_hosts(found, rule.hosts or [])
        return found

    def evaluate(self, principal: str, capability: str, risk: str) -> Verdict:
        mine = self.roles_of(principal)
        best: Verdict | None = None
        if self.first_match is not None:  # match: first: the first matching rule decides
            hit = self.first_match.first(principal, mine, capability, risk)
            best = (
                Verdict(hit.decision, hit.name, hit.approvers, principal, capability, risk)
                if hit is not None
                else Verdict(self.default, None, None, principal, capability, risk)
            )
        for rule in self.rules:
            if rule.matches(principal, mine, capability, risk) and (
                best is None or _STRICTNESS[rule.decision] > _STRICTNESS[best.decision]
            ):
                best = Verdict(
                    rule.decision, rule.name, rule.approvers, principal, capability, risk
                )
        if best is None:
            return Verdict(self.default, None, None, principal, capability, risk)
        return best

    def tightened(self, extra: Mapping[str, Any] | None, *, where: str = "workflow") -> Policy:
        """This policy plus a workflow's own rules, which may only tighten it."""
        if not extra:
            return self
        check_tightening(extra, self, where=where)
        add = _parse(extra, source=where, roles=self.roles)
        for rule in add.rules:
            rule.narrows = True
        for rule in add.rules:
            if rule.decision == "allow":
                raise PolicyError(
                    f"{where} rule '{rule.name}': a workflow may only tighten the policy "
                    "(deny or require_approval), not allow"
                )
        default = self.default
        if "default" in extra:
            if _STRICTNESS[add.default] < _STRICTNESS[self.default]:
                raise PolicyError(
                    f"{where}: default '{add.default}' would loosen the policy's '{self.default}'"
                )
            default = add.default
        return Policy(
            {**self.roles, **add.roles},
            default,
            [*self.rules, *add.rules],
            self.source,
            self.first_match,
            list(self.delegators),  # a workflow never widens who may delegate
        )


def _within(pattern: str, outer: str) -> bool:
    """Is every host ``pattern`` matches also matched by ``outer``? (conservative: a pattern
    with wildcards is only within ``*`` or itself)."""
    if outer == "*" or pattern == outer:
        return True
    return not any(c in pattern for c in "*?[") and fnmatch.fnmatchcase(pattern, outer)


def narrow_hosts(configured: list[str] | None, narrower: list[str]) -> list[str]:
    """The host patterns both lists allow: ``configured`` (None: any host) narrowed by a
    workflow rule's ``narrower``; never a host ``configured`` does not allow."""
    if configured is None:
        return list(dict.fromkeys(narrower))
    kept = [p for p in configured if any(_within(p, w) for w in narrower)]
    kept += [w for w in narrower if any(_within(w, b) for b in configured)]
    return list(dict.fromkeys(kept))


def check_tightening(doc: Any, base: Policy, *, where: str = "workflow") -> None:
    """A workflow's ``policy:`` may only tighten ``base``: deny / require_approval rules, a
    stricter default, and roles of its own that its rules use. It may not change a configured
    role (adding members can loosen too: a role may carry allow rules or approver rights)."""
    if not isinstance(doc, Mapping):
        return  # _parse says what is wrong
    if "match" in doc:
        raise PolicyError(
            f"{where}: 'match' belongs to the configured policy; a workflow's rules all apply "
            "and the most restrictive decides"
        )
    if "delegation" in doc:
        raise PolicyError(
            f"{where}: 'delegation' belongs to the configured policy; a workflow may not let "
            "anyone delegate approvals"
        )
    configured = {**settings.roles(), **base.roles}
    own = doc.get("roles") or {}
    if isinstance(own, Mapping):
        for name in own:
            if str(name) in configured:
                raise PolicyError(
                    f"{where}: roles.{name}: a workflow may not change the configured role "
                    f"'{name}'; give its own role another name"
                )
    used: set[str] = set()
    for i, raw in enumerate(doc.get("rules") or []):
        if not isinstance(raw, Mapping):
            continue
        name = raw.get("name", f"#{i + 1}")
        if str(raw.get("decision", "")) == "allow":
            raise PolicyError(
                f"{where} rule '{name}': decision: a workflow may only tighten the "
                "policy (deny or require_approval), not allow"
            )
        for key in ("principals", "approvers"):
            items = raw.get(key) or []
            for p in [items] if isinstance(items, str) else items:
                if isinstance(p, str) and p.startswith("role:"):
                    used.add(p[5:])
    if isinstance(own, Mapping):
        for name in own:
            if str(name) not in used:
                raise PolicyError(
                    f"{where}: roles.{name}: a workflow's own role must be used by one of its rules"
                )


def check_workflow(doc: Any, *, source: str = "the workflow's policy") -> None:
    """Parse-time check of a workflow's ``policy:`` against the configured policy."""
    try:
        base = current()
    except (PolicyError, settings.SettingsError):
        base = Policy()  # the run itself fails closed on a bad configured policy
    check_tightening(doc, base, where=source)
    _parse(doc, source=source, roles=base.roles)


def _parse(
    doc: Mapping[str, Any],
    *,
    source: str,
    roles: Mapping[str, list[str]] | None = None,
    check_roles: bool = True,
    check_capabilities: bool = True,
) -> Policy:
    if not isinstance(doc, Mapping):
        raise PolicyError(f"{source}: a policy is a mapping with roles, default and rules")
    unknown = set(doc) - {
        *("roles", "default", "rules", "description", "version", "match", "delegation")
    }
    if unknown:
        raise PolicyError(f"{source}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    match = str(doc.get("match", "all"))
    if match not in ("all", "first"):
        raise PolicyError(
            f"{source}: match must be 'all' (the most restrictive matching rule decides) or "
            f"'first' (the first matching rule decides), got {match!r}"
        )
    unmatched: list[str] = []
    raw_roles = doc.get("roles") or {}
    if not isinstance(raw_roles, Mapping):
        raise PolicyError(f"{source}: 'roles' maps role names to lists of users")
    table = {str(k): [str(u) for u in (v or [])] for k, v in raw_roles.items()}
    known_roles = {**(roles or {}), **table, **settings.roles()}
    default = str(doc.get("default", "allow"))
    if default not in DECISIONS:
        raise PolicyError(f"{source}: default must be one of {', '.join(DECISIONS)}")
    rules_raw = doc.get("rules") or []
    if not isinstance(rules_raw, list):
        raise PolicyError(f"{source}: 'rules' must be a list")
    rules = []
    for i, raw in enumerate(rules_raw):
        name = str(raw.get("name", f"#{i + 1}")) if isinstance(raw, Mapping) else f"#{i + 1}"
        where = f"{source} rule '{name}'"
        if not isinstance(raw, Mapping):
            raise PolicyError(f"{where}: a rule is a mapping")
        extra = set(raw) - {
            "name",
            "principals",
            "capabilities",
            "risk",
            "decision",
            "approvers",
            "description",
            "hosts",
        }
        if extra:
            raise PolicyError(f"{where}: unknown key(s) {', '.join(sorted(map(str, extra)))}")
        principals = _strings(raw.get("principals", ["*"]), where, "principals")
        for p in principals:
            if check_roles and p.startswith("role:") and p[5:] not in known_roles:
                raise PolicyError(f"{where}: unknown role '{p[5:]}' in principals")
        caps = _strings(raw.get("capabilities", ["*"]), where, "capabilities")
        for c in caps:
            if not _PATTERN.match(c) or "**" in c:
                raise PolicyError(f"{where}: malformed capability pattern {c!r}")
        if match == "first":
            known = known_capabilities()
            if not any(fnmatch.fnmatchcase(k, c) for k in known for c in caps):
                unmatched.append(f"{where} ({', '.join(caps)})")
        elif check_capabilities:
            known = known_capabilities()
            for c in caps:
                if not any(fnmatch.fnmatchcase(k, c) for k in known):
                    raise PolicyError(
                        f"{where}: capability pattern {c!r} matches no known capability, so "
                        "the rule could never apply (register the capability first)"
                    )
        decision = str(raw.get("decision", ""))
        if decision not in DECISIONS:
            raise PolicyError(f"{where}: decision must be one of {', '.join(DECISIONS)}")
        approvers = raw.get("approvers")
        if approvers is not None:
            approvers = _strings(approvers, where, "approvers")
            for a in approvers:
                if check_roles and a.startswith("role:") and a[5:] not in known_roles:
                    raise PolicyError(f"{where}: unknown role '{a[5:]}' in approvers")
        if approvers and decision != "require_approval":
            raise PolicyError(f"{where}: 'approvers' only goes with require_approval")
        hosts = raw.get("hosts")
        if hosts is not None:
            hosts = [h.lower() for h in _strings(hosts, where, "hosts")]
        rule = Rule(name, principals, caps, decision, _risk(raw.get("risk"), where), approvers)
        rule.source, rule.hosts = source, hosts
        rules.append(rule)
    all_roles = {**settings.roles(), **table}
    delegators = _delegation(doc.get("delegation"), source, known_roles if check_roles else None)
    if match == "first":
        return Policy(all_roles, default, [], source, Ordered(rules, unmatched), delegators)
    return Policy(all_roles, default, rules, source, None, delegators)


def _delegation(raw: Any, source: str, roles: Mapping[str, Any] | None) -> list[str]:
    """``delegation: {allow: [role:lead, bob]}``: who may delegate their approvals."""
    if raw is None:
        return []
    if not isinstance(raw, Mapping) or set(raw) - {"allow"}:
        raise PolicyError(f"{source}: 'delegation' is {{allow: [role:NAME, user, ...]}}")
    who = _strings(raw.get("allow"), f"{source} delegation", "allow")
    for entry in who:
        if roles is not None and entry.startswith("role:") and entry[5:] not in roles:
            raise PolicyError(f"{source} delegation: unknown role '{entry[5:]}' in allow")
    return who


def _strings(value: Any, where: str, key: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise PolicyError(f"{where}: '{key}' must be a list of strings")
    if not value:
        raise PolicyError(f"{where}: '{key}' is empty, so the rule would match nothing")
    return value


def _risk(value: Any, where: str) -> list[tuple[str, int]] | None:
    if value is None:
        return None
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        m = _RISK_CMP.match(str(item))
        if not m:
            raise PolicyError(
                f"{where}: risk must be levels (low, medium, high, critical) or like '>= high'"
            )
        out.append((m.group(1) or "==", RISK_ORDER[m.group(2)]))
    return out


def parse(
    text_or_doc: str | Mapping[str, Any],
    *,
    source: str = "policy",
    check_roles: bool = True,
    check_capabilities: bool = True,
) -> Policy:
    """Parse a policy. ``check_roles=False`` leaves unknown roles to be checked later (a
    workflow's own rules may use the roles of the configured policy)."""
    if isinstance(text_or_doc, str):
        import yaml

        from airun_nb.yamlreader import safe as yamlsafe

        try:
            doc = yamlsafe.load(text_or_doc, where=source) or {}
        except yamlsafe.YamlLimitError as exc:
            raise PolicyError(exc.message) from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f" line {mark.line + 1}" if mark is not None else ""
            raise PolicyError(f"{source}:{line} invalid YAML") from None
    else:
        doc = text_or_doc
    if policy_dialect.is_seed_policy(doc):  # the seed runtime's files (v1 and v2 shapes)
        try:
            doc = policy_dialect.native(doc, source=source)
        except policy_dialect.SeedPolicyError as exc:
            raise PolicyError(exc.message) from None
    return _parse(
        doc, source=source, check_roles=check_roles, check_capabilities=check_capabilities
    )


def load_file(path: str | os.PathLike[str], *, check_capabilities: bool = True) -> Policy:
    p = Path(path).expanduser()
    try:
        text = p.read_text()
    except OSError as exc:
        raise PolicyError(f"cannot read the policy {p}: {exc.strerror}") from None
    return parse(text, source=str(p), check_capabilities=check_capabilities)


def configure(path: str | os.PathLike[str] | None) -> None:
    """Set the policy file for this process (what ``%config Workflow.policy`` does)."""
    environment.configure(policy=None if path is None else str(path))
    if path is None:
        _configured.pop("path", None)
    else:
        # Kept even when it is bad: every run then fails with its error (fail closed).
        _configured["path"] = str(path)
        # (capabilities a notebook registers later are checked when a run loads it)
        load_file(path, check_capabilities=False)


def current() -> Policy:
    """The policy in force: configured path, else ``AIRUN_POLICY``, else the settings."""
    path = _configured.get("path") or settings_now().policy
    if path:
        return load_file(path)
    conf = settings.load().get("policy")
    if isinstance(conf, str):
        base = settings.settings_path()
        p = Path(conf)
        if base is not None and not p.is_absolute():
            p = base.parent / p
        return load_file(p)
    if isinstance(conf, Mapping):
        return parse(conf, source="settings policy")
    return Policy()


def files() -> list[Path]:
    """The policy files in force or configured (trusted files: no workflow may reach them)."""
    return settings.policy_files()


def all_roles() -> dict[str, list[str]]:
    """Roles from the policy and the settings (for gate approvers)."""
    try:
        table = dict(current().roles)
    except PolicyError:
        table = {}
    for role, members in settings.roles().items():
        table.setdefault(role, members)
    return table
