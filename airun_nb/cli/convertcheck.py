"""``airun convert --check``: the original file and its converted form, asked the same questions.

A policy: both forms decide for every principal the rules name (patterns filled in), the
launcher, an e-mail owner and an unknown agent, for every known capability and every capability
the rules name, at every risk level; each different decision is a difference. A workflow: both
forms parse, and give the same name, params, failure handling, deadline and steps (kind,
capability, needs, retries, timeout, risk, agent, gate settings, compensation); every template
of every step is rendered in both against the same outputs of its upstream steps (the keys each
capability gives, or any key for a capability whose keys are not known in advance), and the
workflow's own policy rules decide the same. Each difference is one line.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from typing import Any

from airun_nb import capabilities
from airun_nb.errors import AirunError
from airun_nb.governance import policy as policy_mod
from airun_nb.spec.model import StepSpec, WorkflowSpec

RISKS = ("low", "medium", "high", "critical")


def _filled(pattern: str) -> str:
    return pattern.replace("*", "x").replace("?", "x")


def policy_questions(pols: Iterable[policy_mod.Policy]) -> tuple[set[str], set[str]]:
    """(principals, capabilities) to ask policies about: what their rules name, and more."""
    who = {"tester", "user:tester", "owner@example.com", "agent:unknown", "role:none"}
    what = set(policy_mod.known_capabilities()) | {"unregistered.capability"}
    for pol in pols:
        rules = [*(pol.first_match.rules if pol.first_match else []), *pol.rules]
        for r in rules:
            for p in r.principals:
                if p.startswith("role:"):
                    who.update(pol.roles.get(p[5:], []))
                elif p != "*":
                    who.add(_filled(p))
                    if p.startswith("user:"):
                        who.add(_filled(p[5:]))
            for c in r.capabilities:
                what.add(_filled(c))
                what.update(k for k in capabilities.ALIASES if fnmatch.fnmatchcase(k, c))
    return who, what


def policy_differences(a: policy_mod.Policy, b: policy_mod.Policy) -> list[str]:
    """Every (principal, capability, risk) where the two policies decide differently."""
    who, what = policy_questions([a, b])
    out = []
    for p in sorted(who):
        for c in sorted(what):
            for r in RISKS:
                x, y = a.evaluate(p, c, r), b.evaluate(p, c, r)
                if (x.decision, x.approvers) != (y.decision, y.approvers):
                    out.append(
                        f"{p} running {c} at {r} risk: the original says {x.decision} "
                        f"({x.rule or 'default'}), the converted file {y.decision} "
                        f"({y.rule or 'default'})"
                    )
    return out


def _step_facts(s: StepSpec, upstream: list[str]) -> dict[str, Any]:
    body = capabilities.canonical(str(s.body)) if s.kind == "capability" else s.body
    if s.kind in ("approval", "sql", "python"):
        body = None  # compared as rendered
    return {
        "kind": s.kind,
        "body": body,
        "upstream steps": sorted(upstream),
        "when": s.when,
        "retry": s.retry,
        "timeout": s.timeout,
        "risk": s.risk,
        "agent": s.agent,
        "on_failure": s.on_failure,
        "compensation capability": (s.compensate or {}).get("capability"),
        "foreach": s.foreach,
    }


def _outputs(spec: WorkflowSpec, names: set[str]) -> dict[str, Any]:
    """A made-up output for every step: each key it gives as ``<step.key>``. A step whose keys
    are not known before it runs (a registered capability) is taken to give every name the
    templates use that no param and no other step gives."""
    from airun_nb.capabilities.legacy import GATE_KEYS, output_keys

    out: dict[str, Any] = {}
    given = set(spec.params) | {s.id for s in spec.steps}
    for s in spec.steps:
        if s.kind == "approval":
            given |= set(GATE_KEYS)
        elif s.kind == "capability":
            given |= set(output_keys(str(s.body)) or ())
    names = names - given
    for s in spec.steps:
        if s.kind == "approval":
            keys: Iterable[str] | None = GATE_KEYS
        elif s.kind == "capability":
            keys = output_keys(str(s.body))
        else:
            keys = None
        if s.kind == "approval":  # what a gate records; approver_email is the seed's alias
            keys = [k for k in GATE_KEYS if k != "approver_email"]
        out[s.id] = {k: f"<{s.id}.{k}>" for k in (names if keys is None else keys)}
    return out


def _upstream(spec: WorkflowSpec, sid: str) -> list[str]:
    found: set[str] = set()
    todo = list(spec.by_id[sid].needs)
    while todo:
        n = todo.pop()
        if n not in found:
            found.add(n)
            todo.extend(spec.by_id[n].needs)
    return [s.id for s in spec.steps if s.id in found]


def _rendered(spec: WorkflowSpec, names: set[str], params: dict[str, Any]) -> dict[str, Any]:
    """Every step's templated fields rendered after its upstream steps finished."""
    from airun_nb.engine.scope import Scope
    from airun_nb.engine.state import S_COMPLETED, StepState
    from airun_nb.spec import dialect, templates

    fake = _outputs(spec, names)
    out: dict[str, Any] = {}
    for s in spec.steps:
        states = {x.id: StepState(x) for x in spec.steps}
        for u in [*_upstream(spec, s.id), s.id]:
            states[u].status, states[u].value = S_COMPLETED, fake[u]
        states[s.id].status = "running"
        scope = Scope(
            spec,
            states,
            None,  # type: ignore[arg-type]  # every output is in memory: no store is read
            params=params,
            namespace={},
            run_id=lambda: "r-1",
            user="tester",
        )
        ctx = scope.context()
        fields: dict[str, Any] = {"with": s.with_}
        if s.kind == "approval":
            fields["approval"] = s.body
        if s.kind in ("capability", "sql"):
            fields["body"] = s.body
        for name, value in fields.items():
            try:
                out[f"step '{s.id}' {name}"] = templates.render(value, ctx, step=s.id, field=name)
            except AirunError as exc:
                out[f"step '{s.id}' {name}"] = f"error: {exc.message}"
        if s.compensate:
            states[s.id].status = S_COMPLETED
            cctx = scope.context()
            if spec.seed_dialect:
                cctx = {**cctx, **dialect.own_output(s.id, s, fake[s.id])}
            try:
                value = templates.render(s.compensate, cctx, step=s.id, field="compensate")
            except AirunError as exc:
                value = f"error: {exc.message}"
            out[f"step '{s.id}' compensation"] = value
    return out


def workflow_differences(a: WorkflowSpec, b: WorkflowSpec) -> list[str]:
    """What differs between a workflow as written and as converted."""
    out = []
    for what in ("name", "params", "on_failure", "deadline", "max_parallel"):
        x, y = getattr(a, what), getattr(b, what)
        if what == "params":  # an --input of these names was always taken
            y = {k: v for k, v in y.items() if k in x or k not in ("workflow_id", "run_id")}
        if x != y:
            out.append(f"{what}: the original has {x!r}, the converted file {y!r}")
    ids_a, ids_b = [s.id for s in a.steps], [s.id for s in b.steps]
    if ids_a != ids_b:
        out.append(f"steps: the original has {ids_a}, the converted file {ids_b}")
        return out
    for sa, sb in zip(a.steps, b.steps, strict=True):
        fa = _step_facts(sa, _upstream(a, sa.id))
        fb = _step_facts(sb, _upstream(b, sb.id))
        for key in fa:
            if fa[key] != fb[key]:
                out.append(
                    f"step '{sa.id}' {key}: the original has {fa[key]!r}, the converted "
                    f"file {fb[key]!r}"
                )
    names: set[str] = set()
    for spec in (a, b):
        for _sid, _field, used in spec.template_names():
            names |= set(used)
    params = {**a.params}
    ra, rb = _rendered(a, names, params), _rendered(b, names, params)
    for key in ra:
        both_fail = str(ra[key]).startswith("error:") and str(rb.get(key)).startswith("error:")
        if ra[key] != rb.get(key) and not both_fail:
            out.append(
                f"{key}: the original renders {ra[key]!r}, the converted file {rb.get(key)!r}"
            )
    pa = policy_mod.Policy(default="allow").tightened(a.policy) if a.policy else None
    pb = policy_mod.Policy(default="allow").tightened(b.policy) if b.policy else None
    if (pa is None) != (pb is None):
        out.append("policy: only one of the two forms has rules of its own")
    elif pa is not None and pb is not None:
        out.extend(f"policy: {d}" for d in policy_differences(pa, pb))
    return out
