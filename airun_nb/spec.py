"""The workflow specification: YAML in, a validated, hashed model out.

Parsing is two-phase: the YAML is loaded (fast C loader where available) and validated; only when
something is wrong is the document composed again to find the line of the offending key, so
errors read ``line 7, steps[2].needs: unknown step 'lod' (did you mean 'load'?)``.
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import yaml

from . import templates
from .errors import SpecError, TemplateError

try:  # pragma: no cover - depends on how PyYAML was built
    _Loader: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover
    _Loader = yaml.SafeLoader

KINDS = ("call", "python", "sql", "capability", "approval", "parallel")
STEP_KEYS = {
    "id",
    "needs",
    "when",
    "with",
    "retry",
    "timeout",
    "output",
    "compensate",
    "compensate_on_failure",
    "on_failure",
    "check",
    "risk",
    "description",
    "executor",
    "notify",
    "foreach",
    "as",
    *KINDS,
}
WORKFLOW_KEYS = {
    "name",
    "description",
    "params",
    "steps",
    "max_parallel",
    "on_failure",
    "metadata",
    "executor",
    "version",
    "policy",
}
# The seed (AI-First Runtime) dialect: alias -> native key.
SEED_STEP_ALIASES = {
    "name": "id",
    "depends_on": "needs",
    "inputs": "with",
    "capability_name": "capability",
    "compensation": "compensate",
    "risk_level": "risk",
}
SEED_WORKFLOW_ALIASES = {"initial_state": "params"}
SEED_STEP_TYPES = {"HUMAN_APPROVAL", "PARALLEL", "CAPABILITY", "ACTION", "TASK"}
RISKS = ("low", "medium", "high", "critical")
ON_FAILURE = ("rollback", "stop")
BACKOFFS = ("fixed", "exponential", "linear")
TEMPLATE_ROOTS = {"params", "steps", "run"}
_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any, *, path: str) -> float:
    """``"1s"``, ``"250ms"``, ``"5m"``, ``"1h30m"`` or a number of seconds -> seconds."""
    if isinstance(value, bool):
        raise SpecError(f"expected a duration such as '30s' or '5m', got {value!r}", path=path)
    if isinstance(value, (int, float)):
        if value < 0:
            raise SpecError("a duration cannot be negative", path=path)
        return float(value)
    if isinstance(value, str):
        text = value.strip().replace(" ", "")
        parts = _DURATION.findall(text)
        if parts and "".join(n + u for n, u in parts) == text:
            return sum(float(n) * _UNITS[u] for n, u in parts)
    raise SpecError(f"expected a duration such as '30s' or '5m', got {value!r}", path=path)


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
    definition: dict[str, Any] = field(default_factory=dict)
    def_hash: str = ""
    templated: bool = True  # False when no field holds a template (nothing to check)
    index: int = 0
    foreach: Any = None  # a list, or a template over params: one step per item
    item_name: str = "item"
    bindings: dict[str, Any] = field(default_factory=dict)  # item and index of an expanded step

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
                    names, _ = templates.references(source)
                    cached.append((s.id, field_path, frozenset(names)))
            self.__dict__["_tnames"] = cached
        return cached


def _mentions_template(obj: Any) -> bool:
    if isinstance(obj, str):
        return "{{" in obj or "{%" in obj
    if isinstance(obj, dict):
        return any(_mentions_template(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return any(_mentions_template(v) for v in obj)
    return False


def _strkeys(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _strkeys(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strkeys(v) for v in obj]
    return obj


def _hash(obj: Any) -> str:
    data = json.dumps(_strkeys(obj), sort_keys=True, default=repr, separators=(",", ":"))
    return hashlib.sha256(data.encode()).hexdigest()[:16]


def _suggest(word: Any, options: Any) -> str:
    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


class _Parser:
    def __init__(
        self, text: str | None, name: str | None, line_offset: int, doc: Any = None
    ) -> None:
        self._text = text
        self._doc = doc
        self.name = name
        self.line_offset = line_offset
        self._node: yaml.Node | None = None
        self._path_of: dict[str, list[Any]] = {}

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = yaml.safe_dump(self._doc, sort_keys=False)
        return self._text

    # -- error location -------------------------------------------------------------------
    def error(self, message: str, path: list[Any]) -> SpecError:
        return SpecError(message, line=self.locate(path), path=_fmt_path(path) or None)

    def locate(self, path: list[Any]) -> int | None:
        try:
            if self._node is None:
                self._node = yaml.compose(self.text, Loader=yaml.SafeLoader)
            node = self._node
            line = node.start_mark.line if node is not None else None
            for key in path:
                if isinstance(node, yaml.MappingNode):
                    found = None
                    for k, v in node.value:
                        if k.value == key:
                            found = (k, v)
                            break
                    if found is None:
                        break
                    line = found[0].start_mark.line
                    node = found[1]
                elif isinstance(node, yaml.SequenceNode) and isinstance(key, int):
                    if key >= len(node.value):
                        break
                    node = node.value[key]
                    line = node.start_mark.line
                else:
                    break
            return None if line is None else line + 1 + self.line_offset
        except yaml.YAMLError:
            return None

    def duration(self, value: Any, path: list[Any]) -> float:
        try:
            return parse_duration(value, path=_fmt_path(path))
        except SpecError as exc:
            raise self.error(exc.reason, path) from None

    # -- parsing --------------------------------------------------------------------------
    def load(self) -> Any:
        if self._doc is not None:
            return self._doc
        try:
            return yaml.load(self.text, Loader=_Loader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 + self.line_offset if mark is not None else None
            problem = exc.problem or exc.context or "invalid YAML"
            raise SpecError(f"invalid YAML: {problem}", line=line) from None
        except yaml.YAMLError as exc:
            raise SpecError(f"invalid YAML: {exc}") from None

    def parse(self) -> WorkflowSpec:
        doc = self.load()
        if doc is None:
            raise SpecError("the workflow is empty: it needs at least a 'steps:' list")
        if isinstance(doc, list):
            doc = {"steps": doc}
        if not isinstance(doc, dict):
            raise SpecError(
                f"a workflow is a mapping with a 'steps:' list, got {type(doc).__name__}", line=1
            )
        seed = False
        wf: dict[str, Any] = {}
        for key, value in doc.items():
            if key in SEED_WORKFLOW_ALIASES:
                seed = True
                key = SEED_WORKFLOW_ALIASES[key]
            if key == "enable_auto_rollback":
                seed = True
                wf["on_failure"] = "rollback" if value else "stop"
                continue
            if key not in WORKFLOW_KEYS:
                raise self.error(f"unknown key '{key}'{_suggest(str(key), WORKFLOW_KEYS)}", [key])
            wf[key] = value
        raw_steps = wf.get("steps")
        if raw_steps is None:
            raise SpecError("the workflow has no 'steps:' list", line=1 + self.line_offset)
        if not isinstance(raw_steps, list) or not raw_steps:
            raise self.error("'steps' must be a non-empty list", ["steps"])
        params = wf.get("params") or {}
        if not isinstance(params, dict):
            raise self.error("'params' must be a mapping", ["params"])
        max_parallel = wf.get("max_parallel", 4)
        if not isinstance(max_parallel, int) or isinstance(max_parallel, bool) or max_parallel < 1:
            raise self.error("'max_parallel' must be a positive integer", ["max_parallel"])
        on_failure = wf.get("on_failure", "rollback")
        if on_failure not in ON_FAILURE:
            raise self.error(f"'on_failure' must be one of {', '.join(ON_FAILURE)}", ["on_failure"])
        if wf.get("policy") is not None:
            from .policy import PolicyError
            from .policy import parse as parse_policy

            try:
                parse_policy(wf["policy"], source="the workflow's policy", check_roles=False)
            except PolicyError as exc:
                raise self.error(exc.message, ["policy"]) from None
        executor = wf.get("executor", "local")
        if executor not in ("local", "dask"):
            raise self.error("'executor' must be 'local' or 'dask'", ["executor"])
        steps: list[StepSpec] = []
        for i, raw in enumerate(raw_steps):
            got, is_seed = self.step(raw, ["steps", i], parent_needs=[])
            seed = seed or is_seed
            steps.extend(got)
        name = self.name or wf.get("name")
        if not name:
            raise SpecError(
                "the workflow needs a name: give one after %%workflow or as 'name:' in the YAML"
            )
        spec = WorkflowSpec(
            name=str(name),
            steps=steps,
            params=dict(params),
            description=wf.get("description"),
            max_parallel=max_parallel,
            on_failure=on_failure,
            executor=executor,
            metadata=wf.get("metadata") or {},
            seed_dialect=seed,
            policy=wf.get("policy"),
            source=self._text or "",
        )
        for i, s in enumerate(steps):
            s.index = i
        self.check_graph(spec, raw_steps)
        spec.spec_hash = _hash(
            {"name": spec.name, "steps": [s.definition for s in steps], "params": spec.params}
        )
        return spec

    def step(
        self, raw: Any, path: list[Any], parent_needs: list[str]
    ) -> tuple[list[StepSpec], bool]:
        if not isinstance(raw, dict):
            raise self.error("each step must be a mapping with an 'id' and a kind", path)
        seed = False
        d: dict[str, Any] = {}
        step_type: str | None = None
        max_retries: Any = None
        for key, value in raw.items():
            if key in SEED_STEP_ALIASES:
                seed = True
                key = SEED_STEP_ALIASES[key]
            elif key == "step_type":
                seed = True
                step_type = str(value).upper()
                if step_type not in SEED_STEP_TYPES:
                    raise self.error(
                        f"unknown step_type '{value}' (expected one of "
                        f"{', '.join(sorted(SEED_STEP_TYPES))})",
                        [*path, "step_type"],
                    )
                continue
            elif key == "max_retries":
                seed = True
                max_retries = value
                continue
            elif key == "retry_policy":
                seed = True
                key = "retry"
            if key not in STEP_KEYS:
                raise self.error(
                    f"unknown key '{key}'{_suggest(str(key), STEP_KEYS)}", [*path, key]
                )
            d[key] = value
        sid = d.get("id")
        if not isinstance(sid, str) or not _ID.match(sid):
            raise self.error(
                "each step needs an 'id' made of letters, digits, '_' or '-'"
                + (f", got {sid!r}" if sid is not None else ""),
                path,
            )
        if step_type == "HUMAN_APPROVAL":
            d["approval"] = d.pop("with", None) or {}
        kinds = [k for k in KINDS if k in d]
        if not kinds:
            raise self.error(f"step '{sid}' has no kind: give one of {', '.join(KINDS)}", path)
        if len(kinds) > 1:
            raise self.error(
                f"step '{sid}' has more than one kind ({', '.join(kinds)}); give exactly one",
                path,
            )
        kind = kinds[0]
        body = d[kind]
        needs = d.get("needs") or []
        if isinstance(needs, str):
            needs = [needs]
        if not isinstance(needs, list) or not all(isinstance(n, str) for n in needs):
            raise self.error("'needs' must be a list of step ids", [*path, "needs"])
        needs = list(dict.fromkeys([*parent_needs, *needs]))
        with_ = d.get("with") or {}
        if not isinstance(with_, dict):
            raise self.error(
                "'with' must be a mapping of argument names to values", [*path, "with"]
            )
        if kind == "call" and not (isinstance(body, str) and body.strip()):
            raise self.error("'call' names a notebook function or 'module:function'", [*path, kind])
        if kind in ("python", "sql") and not (isinstance(body, str) and body.strip()):
            raise self.error(f"'{kind}' must be a non-empty string", [*path, kind])
        if kind == "capability" and not (isinstance(body, str) and body.strip()):
            raise self.error("'capability' names a capability such as fs.write", [*path, kind])
        if kind == "approval":
            if body is not None and not isinstance(body, dict):
                raise self.error(
                    "'approval' must be a mapping (message, approvers, ...)", [*path, kind]
                )
            from .gate import ApprovalError, parse_config

            try:
                parse_config(body, step=sid)
            except (ApprovalError, SpecError) as exc:
                raise self.error(str(exc).split(": ", 1)[-1], [*path, kind]) from None
        retry = self.retry(d.get("retry"), max_retries, [*path, "retry"])
        timeout = (
            self.duration(d["timeout"], [*path, "timeout"])
            if d.get("timeout") is not None
            else None
        )
        if d.get("executor") not in (None, "local", "dask"):
            raise self.error("'executor' must be 'local' or 'dask'", [*path, "executor"])
        risk = d.get("risk")
        if risk is not None:
            risk = str(risk).lower()
            if risk not in RISKS:
                raise self.error(f"'risk' must be one of {', '.join(RISKS)}", [*path, "risk"])
        on_failure = d.get("on_failure")
        if on_failure is not None and on_failure not in ON_FAILURE:
            raise self.error(
                f"'on_failure' must be one of {', '.join(ON_FAILURE)}", [*path, "on_failure"]
            )
        output = d.get("output")
        if output is not None and not (isinstance(output, str) and output.isidentifier()):
            raise self.error("'output' must be a Python variable name", [*path, "output"])
        compensate = d.get("compensate")
        if compensate is not None:
            compensate = self.compensation(compensate, [*path, "compensate"])
        when = d.get("when")
        if when is not None and not isinstance(when, (str, bool)):
            raise self.error("'when' must be an expression", [*path, "when"])
        check = d.get("check")
        if check is not None and not isinstance(check, str):
            raise self.error("'check' must be an expression over 'result'", [*path, "check"])

        children: list[StepSpec] = []
        foreach = d.get("foreach")
        item_name = d.get("as", "item")
        if foreach is not None:
            if kind in ("parallel", "approval"):
                raise self.error(f"'foreach' does not go with '{kind}'", [*path, "foreach"])
            if not isinstance(foreach, list) and not (
                isinstance(foreach, str) and templates.has_template(foreach)
            ):
                raise self.error(
                    "'foreach' is a list, or a template such as '{{ params.regions }}'",
                    [*path, "foreach"],
                )
            if isinstance(foreach, str):
                names, refs = templates.references(foreach)
                if refs or names - {"params"}:
                    raise self.error(
                        "'foreach' may use params only (its items are fixed when the run is "
                        "planned); fan out over a step's output inside a python step",
                        [*path, "foreach"],
                    )
            if not (isinstance(item_name, str) and item_name.isidentifier()):
                raise self.error("'as' must be a name such as item or region", [*path, "as"])
        elif "as" in d:
            raise self.error("'as' goes with 'foreach'", [*path, "as"])
        if kind == "parallel":
            if not isinstance(body, list) or not body:
                raise self.error("'parallel' must be a non-empty list of steps", [*path, kind])
            for j, child in enumerate(body):
                got, s = self.step(child, [*path, kind, j], parent_needs=needs)
                seed = seed or s
                children.extend(got)
            body = [c.id for c in children]
            needs = [*needs, *[c.id for c in children]]

        definition = {k: v for k, v in d.items() if k not in ("description", "output", "notify")}
        definition["kind"] = kind
        if kind == "parallel":
            definition["parallel"] = [c.definition for c in children]
        definition["needs"] = sorted(needs)
        step = StepSpec(
            id=sid,
            kind=kind,
            body=body,
            with_=with_,
            needs=needs,
            when=None if when is None else str(when),
            retry=retry,
            timeout=timeout,
            output=output,
            compensate=compensate,
            compensate_on_failure=bool(d.get("compensate_on_failure", False)),
            on_failure=on_failure,
            check=check,
            risk=risk,
            executor=d.get("executor"),
            description=d.get("description"),
            notify=d.get("notify"),
            definition=definition,
            def_hash=_hash(definition),
            foreach=foreach,
            item_name=item_name,
            templated=when is not None  # a bare `when:` expression is a template too
            or _mentions_template(definition)
            or _mentions_template(d.get("notify")),
        )
        self._path_of[sid] = path
        return [*children, step], seed

    def compensation(self, value: Any, path: list[Any]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(
                "'compensate' must be a step body such as {call: f, with: {...}}", path
            )
        out: dict[str, Any] = {}
        for key, v in value.items():
            out[SEED_STEP_ALIASES.get(str(key), str(key))] = v
        kinds = [k for k in ("call", "python", "sql", "capability") if k in out]
        if len(kinds) != 1:
            raise self.error(
                "'compensate' needs exactly one of call, python, sql or capability", path
            )
        allowed = {"call", "python", "sql", "capability", "with", "retry", "timeout"}
        for key in out:
            if key not in allowed:
                raise self.error(f"unknown key '{key}'{_suggest(key, allowed)}", [*path, key])
        if out.get("with") is not None and not isinstance(out["with"], dict):
            raise self.error("'with' must be a mapping", [*path, "with"])
        if "retry" in out:
            policy = self.retry(out["retry"], None, [*path, "retry"])
            out["retry"] = {
                "attempts": policy.attempts,
                "backoff": policy.backoff,
                "initial": policy.initial,
                "max": policy.max,
                "on": list(policy.on),
            }
        if out.get("timeout") is not None:
            out["timeout"] = self.duration(out["timeout"], [*path, "timeout"])
        return out

    def retry(self, value: Any, max_retries: Any, path: list[Any]) -> RetryPolicy:
        if value is None and max_retries is None:
            return RetryPolicy()
        if value is None:
            value = {"attempts": max_retries}
        if isinstance(value, int) and not isinstance(value, bool):
            value = {"attempts": value}
        if not isinstance(value, dict):
            raise self.error("'retry' must be a number of attempts or a mapping", path)
        # YAML 1.1 reads a bare `on:` key as the boolean True.
        value = {("on" if k is True else k): v for k, v in value.items()}
        allowed = {"attempts", "backoff", "initial", "max", "on", "max_attempts", "delay"}
        for key in value:
            if key not in allowed:
                raise self.error(f"unknown key '{key}'{_suggest(key, allowed)}", [*path, key])
        attempts = value.get("attempts", value.get("max_attempts", 1))
        if not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 1:
            raise self.error("'attempts' must be a positive integer", [*path, "attempts"])
        backoff = value.get("backoff", "exponential")
        if backoff not in BACKOFFS:
            raise self.error(f"'backoff' must be one of {', '.join(BACKOFFS)}", [*path, "backoff"])
        on = value.get("on", [])
        if isinstance(on, str):
            on = [on]
        if not isinstance(on, list) or not all(isinstance(x, str) for x in on):
            raise self.error("'on' must be a list of exception type names", [*path, "on"])
        initial = value.get("initial", value.get("delay", 1.0))
        return RetryPolicy(
            attempts=attempts,
            backoff=backoff,
            initial=self.duration(initial, [*path, "initial"]),
            max=self.duration(value.get("max", 30.0), [*path, "max"]),
            on=tuple(on),
        )

    def check_graph(self, spec: WorkflowSpec, raw_steps: list[Any]) -> None:
        paths = self._path_of
        seen: set[str] = set()
        for s in spec.steps:
            if s.id in seen:
                raise self.error(f"duplicate step id '{s.id}'", paths.get(s.id, ["steps"]))
            seen.add(s.id)
        ids = {s.id for s in spec.steps}
        for s in spec.steps:
            for n in s.needs:
                if n not in ids:
                    raise self.error(
                        f"step '{s.id}' needs unknown step '{n}'{_suggest(n, ids)}",
                        [*paths.get(s.id, []), "needs"],
                    )
                if n == s.id:
                    raise self.error(f"step '{s.id}' needs itself", [*paths.get(s.id, []), "needs"])
            if s.kind == "python":
                for ref in sorted(_python_refs(str(s.body))):
                    if ref not in ids:
                        raise self.error(
                            f"step '{s.id}': its code reads steps.{ref}, an unknown step"
                            f"{_suggest(ref, ids)}",
                            [*paths.get(s.id, []), "python"],
                        )
                    if ref != s.id and ref not in s.needs:
                        s.needs.append(ref)
            # Template references add implicit dependencies; check names are known.
            for field_path, source in _template_fields(s) if s.templated else ():
                try:
                    _, step_refs = templates.references(source)
                except TemplateError as exc:
                    raise self.error(
                        f"step '{s.id}', field '{field_path}': {exc}",
                        [*paths.get(s.id, []), field_path.split(".")[0].split("[")[0]],
                    ) from None
                for ref in step_refs:
                    if ref not in ids:
                        raise self.error(
                            f"step '{s.id}', field '{field_path}': unknown step "
                            f"'{ref}'{_suggest(ref, ids)}",
                            [*paths.get(s.id, []), field_path.split(".")[0].split("[")[0]],
                        )
                    if (
                        ref != s.id
                        and ref not in s.needs
                        and field_path.split(".")[0] not in ("compensate",)
                    ):
                        s.needs.append(ref)
        cycle = _find_cycle(spec)
        if cycle:
            first = cycle[0]
            raise self.error(
                "dependency cycle: " + " -> ".join([*cycle, first]),
                [*paths.get(first, []), "needs"],
            )


def _python_refs(code: str) -> set[str]:
    """Step ids an inline ``python:`` body reads as ``steps.X`` or ``steps["X"]``."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return set()
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id == "steps":
                out.add(node.attr)
        elif (
            isinstance(node, ast.Subscript)
            and isinstance(node.value, ast.Name)
            and node.value.id == "steps"
            and isinstance(node.slice, ast.Constant)
            and isinstance(node.slice.value, str)
        ):
            out.add(node.slice.value)
    return out


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
    if step.compensate:
        out.extend(templates.walk_strings(step.compensate, "compensate"))
    return out


def _find_cycle(spec: WorkflowSpec) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in spec.by_id[n].needs:
            if state.get(m) == 1:
                return stack[stack.index(m) :]
            if state.get(m) is None:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for s in spec.steps:
        if s.id not in state:
            found = visit(s.id)
            if found:
                return found
    return None


def _fmt_path(path: list[Any]) -> str:
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += f".{p}" if out else str(p)
    return out


def expand(spec: WorkflowSpec, params: Mapping[str, Any]) -> WorkflowSpec:
    """Expand ``foreach`` steps for these params: ``ID-0``, ``ID-1``... each with ``item`` (or
    its ``as`` name) and ``index`` bound, and ``ID`` collecting their outputs as a list."""
    if not any(s.foreach is not None for s in spec.steps):
        return spec
    steps: list[StepSpec] = []
    renamed: dict[str, list[str]] = {}
    for s in spec.steps:
        if s.foreach is None:
            steps.append(s)
            continue
        items = s.foreach
        if isinstance(items, str):
            items = templates.render(items, {"params": params}, step=s.id, field="foreach")
        if not isinstance(items, (list, tuple)):
            raise SpecError(f"step '{s.id}': 'foreach' gave {type(items).__name__}, not a list")
        children = []
        for i, item in enumerate(items):
            child = replace(
                s,
                id=f"{s.id}-{i}",
                foreach=None,
                output=None,
                bindings={s.item_name: item, "index": i},
                definition={**s.definition, "foreach_item": item, "index": i},
                templated=True,
            )
            child.def_hash = _hash(child.definition)
            children.append(child)
        steps.extend(children)
        collector = replace(
            s,
            kind="foreach",
            body=[c.id for c in children],
            needs=[*s.needs, *(c.id for c in children)],
            foreach=None,
            with_={},
            when=None,
            check=None,
            compensate=None,
            retry=RetryPolicy(),
            timeout=None,
            templated=False,
            definition={"kind": "foreach", "children": [c.def_hash for c in children]},
        )
        collector.def_hash = _hash(collector.definition)
        steps.append(collector)
        renamed[s.id] = [c.id for c in children]
    for i, s in enumerate(steps):
        s.index = i
    out = replace(spec, steps=steps)
    out.__post_init__()
    return out


def parse(text: str, *, name: str | None = None, line_offset: int = 0) -> WorkflowSpec:
    """Parse workflow YAML into a :class:`WorkflowSpec`.

    ``name`` overrides the YAML's ``name:``; ``line_offset`` is added to reported line numbers
    (a ``%%workflow`` cell's YAML starts on the cell's second line).
    """
    return _Parser(text, name, line_offset).parse()


def from_dict(doc: Mapping[str, Any], *, name: str | None = None) -> WorkflowSpec:
    """Build a spec from an already-loaded mapping (e.g. generated in Python)."""
    spec = _Parser(None, name, 0, doc=dict(doc)).parse()
    spec.source = json.dumps(dict(doc), default=str)
    return spec
