"""The parsed workflow model: a workflow, its steps and their retry policies."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from airun_nb.errors import TemplateError
from airun_nb.spec import templates


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 1
    backoff: str = "exponential"
    initial: float = 1.0
    max: float = 30.0
    on: tuple[str, ...] = ()

    def delay(self, failed_attempts: int) -> float:
        """Seconds to wait after ``failed_attempts`` failures (1 = after the first)."""
        if self.backoff == "fixed":
            d = self.initial
        elif self.backoff == "linear":
            d = self.initial * failed_attempts
        else:
            d = self.initial * (2 ** (failed_attempts - 1))
        return min(d, self.max)

    def retries(self, exc: BaseException) -> bool:
        if not self.on:
            return isinstance(exc, Exception)
        names = {c.__name__ for c in type(exc).__mro__} | {
            f"{c.__module__}.{c.__qualname__}" for c in type(exc).__mro__
        }
        return any(n in names for n in self.on)


@dataclass
class StepSpec:
    id: str
    kind: str
    body: Any
    with_: dict[str, Any] = field(default_factory=dict)
    needs: list[str] = field(default_factory=list)
    when: str | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout: float | None = None
    output: str | None = None
    compensate: dict[str, Any] | None = None
    compensate_on_failure: bool = False
    on_failure: str | None = None
    check: str | None = None
    risk: str | None = None
    executor: str | None = None
    description: str | None = None
    notify: Any = None
    agent: str | None = None  # who acts: policy principal agent:<name>
    definition: dict[str, Any] = field(default_factory=dict)
    def_hash: str = ""
    templated: bool = True  # False when no field holds a template (nothing to check)
    index: int = 0
    foreach: Any = None  # a list, or a template over params: one step per item
    item_name: str = "item"
    bindings: dict[str, Any] = field(default_factory=dict)  # item and index of an expanded step
    cache: Any = None  # "recompute" | "ignore" | {"version": "..."}: how reuse is decided

    @property
    def is_group(self) -> bool:
        return self.kind == "parallel"


@dataclass
class WorkflowSpec:
    name: str
    steps: list[StepSpec]
    params: dict[str, Any] = field(default_factory=dict)
    description: str | None = None
    max_parallel: int = 4
    on_failure: str = "rollback"
    executor: str = "local"
    metadata: dict[str, Any] = field(default_factory=dict)
    seed_dialect: bool = False
    version: str | None = None
    deadline: float | None = None  # seconds the whole run may take; passed: it fails, rolls back
    dialect: dict[str, Any] = field(default_factory=dict)  # what a seed document kept as record
    policy: dict[str, Any] | None = None
    source: str = ""
    spec_hash: str = ""

    def __post_init__(self) -> None:
        self.by_id: dict[str, StepSpec] = {s.id: s for s in self.steps}

    def step(self, step_id: str) -> StepSpec:
        return self.by_id[step_id]

    def downstream(self) -> dict[str, list[str]]:
        """Step id -> the steps that need it (computed once)."""
        cached: dict[str, list[str]] | None = self.__dict__.get("_downstream")
        if cached is None:
            cached = {s.id: [] for s in self.steps}
            for s in self.steps:
                for n in s.needs:
                    cached[n].append(s.id)
            self.__dict__["_downstream"] = cached
        return cached

    def template_names(self) -> list[tuple[str, str, frozenset[str]]]:
        """(step, field, top-level names) of every template in the workflow (computed once)."""
        cached: list[tuple[str, str, frozenset[str]]] | None = self.__dict__.get("_tnames")
        if cached is None:
            cached = []
            for s in self.steps:
                if not s.templated:
                    continue
                for field_path, source in _template_fields(s):
                    try:
                        names, _ = templates.references(source)
                    except TemplateError as exc:
                        raise TemplateError(
                            f"step '{s.id}', field '{field_path}': {exc.message}"
                        ) from None
                    cached.append((s.id, field_path, frozenset(names)))
            self.__dict__["_tnames"] = cached
        return cached


def _template_fields(step: StepSpec) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    out.extend(templates.walk_strings(step.with_, "with"))
    if step.kind in ("sql", "capability", "call"):
        out.extend(templates.walk_strings(step.body, step.kind))
    if step.kind == "approval" and step.body:
        shown = {k: v for k, v in step.body.items() if k != "notify"}
        out.extend(templates.walk_strings(shown, "approval"))
    if step.when:
        src = step.when if templates.has_template(step.when) else "{{ " + step.when + " }}"
        out.append(("when", src))
    if step.check:
        src = step.check if templates.has_template(step.check) else "{{ " + step.check + " }}"
        out.append(("check", src))
    if step.compensate:
        out.extend(templates.walk_strings(step.compensate, "compensate"))
    return out


CACHE_MODES = ("recompute", "ignore")


def cache_control(value: Any) -> str | dict[str, str] | None:
    """A step's ``cache:``: ``recompute``, ``ignore`` or ``{version: "2"}`` (ValueError else)."""
    if value is None or value in CACHE_MODES:
        return value
    if isinstance(value, dict) and set(value) == {"version"} and value["version"] is not None:
        return {"version": str(value["version"])}
    raise ValueError("'cache' must be recompute, ignore or {version: \"...\"}")


def mentions_template(obj: Any) -> bool:
    if isinstance(obj, str):
        return "{{" in obj or "{%" in obj
    if isinstance(obj, dict):
        return any(mentions_template(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return any(mentions_template(v) for v in obj)
    return False


def check_agent(value: Any, path: list[Any], error: Any) -> str | None:
    """``agent:`` names who acts in a step; policy rules match it as ``agent:<name>``."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise error("'agent' must be a name", path)
    return value
