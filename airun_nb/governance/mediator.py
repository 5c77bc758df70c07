"""The one place that decides whether an action may happen.

Every action a workflow can cause is described as an :class:`Action` and passes :func:`decide`:
each step (``call``, ``python``, ``sql``, ``capability``, ``approval``; each child of a
``foreach``), each compensation (when its step is admitted, and again when it runs), every
``notify`` target of a gate. The policy is evaluated for every principal the action runs for
(the acting user, the run's launcher, the launcher of the run a fork copies, the seed dialect's
owner and agent) and for every name the action is known by: its own, and what it can do
(``acts_as``: ``math.pandas.calculate`` evaluates expressions, so it is ``python.exec`` too;
``net.http.get`` is ``http.request``). The strictest verdict wins.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from airun_nb import capabilities
from airun_nb.governance import policy as policy_mod

_ORDER = policy_mod.DECISIONS


@dataclass(frozen=True)
class Action:
    """What is about to happen, in the policy's terms."""

    capability: str  # the canonical name: python.call, python.exec, sql.query, fs.write, ...
    risk: str
    acts_as: tuple[str, ...] = ()
    what: str = "step"  # step, compensation, notify

    @property
    def names(self) -> tuple[str, ...]:
        return (self.capability, *(a for a in self.acts_as if a != self.capability))


def of_step(kind: str, body: Any, risk: str | None = None) -> Action:
    """A step of any kind (a ``foreach`` child is a step of its own kind)."""
    name = capabilities.policy_name(kind, body)
    return Action(
        name,
        capabilities.risk_of(kind, body, risk),
        capabilities.registry.acts_as(name) if kind == "capability" else (),
    )


def of_compensation(comp: Mapping[str, Any]) -> Action | None:
    """A declared compensation (``{call|python|sql|capability: ...}``) or an automatic undo
    (``{undo: CAPABILITY}``, which acts as the capability it reverses)."""
    for kind in ("call", "python", "sql"):
        if kind in comp:
            act = of_step(kind, comp[kind])
            return Action(act.capability, act.risk, act.acts_as, "compensation")
    for key in ("capability", "undo"):
        if key in comp:
            act = of_step("capability", str(comp[key]))
            return Action(act.capability, act.risk, act.acts_as, "compensation")
    return None


def of_notify(target: Any) -> Action | None:
    """A gate's notify target: a URL is an ``http.request``, a ``module:function`` or notebook
    name a ``python.call``; a Python callable given by the notebook's own code is trusted."""
    if callable(target):
        return None
    if isinstance(target, dict) and isinstance(target.get("url"), str):
        target = target["url"]  # a chat webhook ({url, format}) is a POST like any other
    if isinstance(target, str) and target.startswith(("http://", "https://")):
        return Action(
            "http.request", capabilities.risk_of("capability", "http.request", None), what="notify"
        )
    return Action("python.call", capabilities.risk_of("call", target, None), what="notify")


def decide(
    policy: policy_mod.Policy, principals: Sequence[str], action: Action
) -> policy_mod.Verdict:
    """The verdict for ``action`` run for ``principals``: the strictest over every principal
    and every name the action is known by."""
    who = _unique(principals)
    if action.capability == "approval":  # opening a gate acts on nothing; its notify is mediated
        return policy_mod.Verdict("allow", None, None, who[0], "approval", "low")
    best: policy_mod.Verdict | None = None
    for principal in who:
        for name in action.names:
            seen = policy.evaluate(principal, name, action.risk)
            if name != action.capability:
                seen.capability = f"{action.capability} (as {name})"
            if best is None or _ORDER.index(seen.decision) > _ORDER.index(best.decision):
                best = seen
    assert best is not None
    return best


def stricter(a: policy_mod.Verdict, b: policy_mod.Verdict) -> policy_mod.Verdict:
    return b if _ORDER.index(b.decision) > _ORDER.index(a.decision) else a


def hosts(policy: policy_mod.Policy, principals: Sequence[str]) -> list[str] | None:
    """Where ``http.request`` may go: the hosts of the first principal whose rules list any
    (the launcher comes before the resumer), else None (no host restriction)."""
    for principal in _unique(principals):
        found = policy.hosts_for(principal)
        if found is not None:
            return found
    return None


def _unique(names: Iterable[str | None]) -> list[str]:
    out: list[str] = []
    for n in names:
        if n and n not in out:
            out.append(n)
    return out or ["?"]
