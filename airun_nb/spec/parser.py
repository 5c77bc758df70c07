"""The workflow specification: YAML in, a validated, hashed model out.

Parsing is two-phase: the YAML is loaded (fast C loader where available) and validated; only when
something is wrong is the document composed again to find the line of the offending key, so
errors read ``line 7, steps[2].needs: unknown step 'lod' (did you mean 'load'?)``. A document in
the seed dialect is first translated into a native one by :mod:`airun_nb.spec.dialect`.
"""

from __future__ import annotations

import gc
import json
import re
import warnings
from collections.abc import Mapping
from typing import Any

import yaml

from airun_nb.errors import SpecError
from airun_nb.governance import secrets
from airun_nb.spec import plainsteps as specparts
from airun_nb.spec import templates
from airun_nb.spec.dialect import Translation, translate
from airun_nb.spec.digest import _hash as _hash  # the planner takes it from here
from airun_nb.spec.digest import canonical, of_canonical
from airun_nb.spec.durations import parse_duration
from airun_nb.spec.foreach import expand
from airun_nb.spec.graph import check_graph
from airun_nb.spec.graph import suggest as _suggest
from airun_nb.spec.model import RetryPolicy, StepSpec, WorkflowSpec, cache_control, check_agent
from airun_nb.spec.model import mentions_template as _mentions_template
from airun_nb.spec.plainsteps import NO_RETRY
from airun_nb.yamlreader import safe as yamlsafe

__all__ = [
    "RetryPolicy",
    "StepSpec",
    "WorkflowSpec",
    "expand",
    "from_dict",
    "parse",
    "parse_duration",
]

try:  # pragma: no cover - depends on how PyYAML was built
    _Loader: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover
    _Loader = yaml.SafeLoader

KINDS = ("call", "python", "sql", "capability", "approval", "parallel")
STEP_KEYS = {
    *("id", "needs", "when", "with", "retry", "timeout", "output", "compensate"),
    *("compensate_on_failure", "on_failure", "check", "risk", "description", "executor"),
    *("notify", "foreach", "as", "cache", "agent"),
    *KINDS,
}
WORKFLOW_KEYS = {
    *("name", "description", "params", "steps", "max_parallel", "on_failure", "metadata"),
    *("executor", "version", "policy", "deadline"),
}
RISKS = ("low", "medium", "high", "critical")
ON_FAILURE = ("rollback", "stop")
TEMPLATE_ROOTS = {"params", "steps", "run"}
_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


class _Source:
    """The text of a workflow, its loading, and the lines of paths in it (for errors)."""

    def __init__(self, text: str | None, line_offset: int, doc: Any = None) -> None:
        self._text = text
        self._doc = doc
        self.line_offset = line_offset
        self._node: yaml.Node | None = None
        self.translation = Translation({})

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = yaml.safe_dump(self._doc, sort_keys=False)
        return self._text

    def error(self, message: str, path: list[Any]) -> SpecError:
        """An error at a path of the native document."""
        return self.error_as_written(message, self.translation.origin(path))

    def duration(self, value: Any, path: list[Any]) -> float:
        try:
            return parse_duration(value, path=_fmt_path(path))
        except SpecError as exc:
            raise self.error(exc.reason, path) from None

    def error_as_written(self, message: str, path: list[Any]) -> SpecError:
        """An error at a path of the document as the user wrote it."""
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

    # -- parsing --------------------------------------------------------------------------
    def load(self) -> Any:
        if self._doc is not None:
            return self._doc
        try:
            return yamlsafe.load(self.text, where="the workflow")  # node and alias limits
        except yamlsafe.DuplicateKeyError as exc:
            first, second = (n + 1 + self.line_offset for n in exc.lines)
            raise SpecError(
                f"duplicate key '{exc.key}' (first at line {first})", line=second
            ) from None
        except yamlsafe.YamlLimitError as exc:
            raise SpecError(exc.message) from None
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 + self.line_offset if mark is not None else None
            problem = exc.problem or exc.context or "invalid YAML"
            raise SpecError(f"invalid YAML: {problem}", line=line) from None
        except yaml.reader.ReaderError as exc:  # a character YAML does not allow (a NUL byte)
            line = self.text[: exc.position].count("\n") + 1 + self.line_offset
            code = exc.character if isinstance(exc.character, int) else ord(exc.character)
            what = "a NUL byte" if code == 0 else f"character U+{code:04X}"
            raise SpecError(f"invalid YAML: {what} is not allowed", line=line) from None
        except yaml.YAMLError as exc:
            raise SpecError(f"invalid YAML: {exc}") from None

    def retry(self, value: Any, path: list[Any]) -> RetryPolicy:
        return specparts.retry(value, path, self.error, self.duration)


class _Parser(_Source):
    def __init__(
        self, text: str | None, name: str | None, line_offset: int, doc: Any = None
    ) -> None:
        super().__init__(text, line_offset, doc)
        self.name = name
        self.default_name: str | None = None
        self._path_of: dict[str, list[Any]] = {}
        self._canonical: dict[int, str] = {}  # id(step) -> its definition's canonical JSON

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
        self.translation = translate(doc, self.error_as_written)
        wf: dict[str, Any] = {}
        for key, value in self.translation.doc.items():
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
            from airun_nb.governance.policy import PolicyError, check_workflow

            try:  # only tightening: no allow rules, no configured roles touched
                check_workflow(wf["policy"], source="the workflow's policy")
            except PolicyError as exc:
                raise self.error(exc.message, ["policy"]) from None
        executor = wf.get("executor", "local")
        if executor not in ("local", "dask"):
            raise self.error("'executor' must be 'local' or 'dask'", ["executor"])
        deadline = wf.get("deadline")
        if deadline is not None:
            deadline = self.duration(deadline, ["deadline"])
        steps: list[StepSpec] = []
        plain_step, canonical_of, path_of = specparts.plain_step, self._canonical, self._path_of
        for i, raw in enumerate(raw_steps):
            plain = plain_step(raw)  # most steps of a big workflow: see specparts
            if plain is None:
                steps.extend(self.step(raw, ["steps", i], parent_needs=[]))
            else:
                canonical_of[id(plain[0])] = plain[1]
                path_of[plain[0].id] = ["steps", i]
                steps.append(plain[0])
        name = self.name or wf.get("name") or self.default_name
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
            seed_dialect=self.translation.seed,
            policy=wf.get("policy"),
            source=self._text or "",
            version=None if wf.get("version") is None else str(wf["version"]),
            deadline=deadline,
            dialect=self.translation.record,
        )
        for i, s in enumerate(steps):
            s.index = i
            if s.with_:
                for line in secrets.literal_warnings(s.with_, step=s.id):
                    warnings.warn(line, secrets.SecretWarning, stacklevel=4)
        check_graph(spec, self._path_of, self.error)
        spec.spec_hash = specparts.spec_hash(
            spec.name, spec.params, [self._canonical[id(s)] for s in steps]
        )
        return spec

    def step(self, raw: Any, path: list[Any], parent_needs: list[str]) -> list[StepSpec]:
        plain = None if parent_needs else specparts.plain_step(raw)
        if plain is not None:
            self._canonical[id(plain[0])] = plain[1]
            self._path_of[plain[0].id] = path
            return [plain[0]]
        if not isinstance(raw, dict):
            raise self.error("each step must be a mapping with an 'id' and a kind", path)
        if not STEP_KEYS.issuperset(raw):
            for key in raw:
                if key not in STEP_KEYS:
                    raise self.error(
                        f"unknown key '{key}'{_suggest(str(key), STEP_KEYS)}", [*path, key]
                    )
        d: dict[str, Any] = dict(raw)
        sid = d.get("id")
        if not isinstance(sid, str) or not _ID.match(sid):
            raise self.error(
                "each step needs an 'id' made of letters, digits, '_' or '-'"
                + (f", got {sid!r}" if sid is not None else ""),
                path,
            )
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
            from airun_nb.spec.approval import ApprovalError, parse_config

            try:
                parse_config(body, step=sid)
            except (ApprovalError, SpecError) as exc:
                raise self.error(str(exc).split(": ", 1)[-1], [*path, kind]) from None
        retry = NO_RETRY if d.get("retry") is None else self.retry(d["retry"], [*path, "retry"])
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
        try:
            cache = cache_control(d.get("cache"))
        except ValueError as exc:
            raise self.error(str(exc), [*path, "cache"]) from None

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
                children.extend(self.step(child, [*path, kind, j], parent_needs=needs))
            body = [c.id for c in children]
            needs = [*needs, *[c.id for c in children]]

        # cache: decides reuse, it is not part of what a step computes.
        definition = {
            k: v for k, v in d.items() if k not in ("description", "output", "notify", "cache")
        }
        definition["kind"] = kind
        if kind == "parallel":
            definition["parallel"] = [c.definition for c in children]
        definition["needs"] = sorted(needs)
        text = canonical(definition)
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
            agent=check_agent(d["agent"], [*path, "agent"], self.error) if "agent" in d else None,
            cache=cache,
            definition=definition,
            def_hash=of_canonical(text),
            foreach=foreach,
            item_name=item_name,
            templated=when is not None  # bare `when:` / `check:` expressions are templates too
            or check is not None
            # a template's "{{" / "{%" can only come from a string in the JSON text
            or "{{" in text
            or "{%" in text
            or _mentions_template(d.get("notify")),
        )
        self._canonical[id(step)] = text
        self._path_of[sid] = path
        return [*children, step]

    def compensation(self, value: Any, path: list[Any]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(
                "'compensate' must be a step body such as {call: f, with: {...}}", path
            )
        out = {str(k): v for k, v in value.items()}
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
            policy = self.retry(out["retry"], [*path, "retry"])
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


def _fmt_path(path: list[Any]) -> str:
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += f".{p}" if out else str(p)
    return out


def parse(
    text: str, *, name: str | None = None, line_offset: int = 0, file_stem: str | None = None
) -> WorkflowSpec:
    """Parse workflow YAML into a :class:`WorkflowSpec`.

    ``name`` overrides the YAML's ``name:``; ``line_offset`` is added to reported line numbers
    (a ``%%workflow`` cell's YAML starts on the cell's second line).

    The cyclic garbage collector is paused meanwhile: parsing builds many objects and no cycles,
    and collections would otherwise take nearly half the time of a big workflow.
    """
    parser = _Parser(text, name, line_offset)
    if file_stem is not None and name is None:
        parser.default_name = file_stem  # a file is named by its name:, else by the file
    was = gc.isenabled()
    gc.disable()
    try:
        return parser.parse()
    finally:
        if was:
            gc.enable()


def from_dict(doc: Mapping[str, Any], *, name: str | None = None) -> WorkflowSpec:
    """Build a spec from an already-loaded mapping (e.g. generated in Python)."""
    spec = _Parser(None, name, 0, doc=dict(doc)).parse()
    spec.source = json.dumps(dict(doc), default=str)
    return spec
