"""The seed (AI-First Runtime) dialect, translated into the native document before validation.

:func:`translate` takes the mapping loaded from YAML and returns the native mapping that
:mod:`airun_nb.spec.parser` validates, plus where each renamed key came from, so that errors still point
at the line the user wrote, and what was kept only as a record. A native document passes through
unchanged. ``docs/migrating.md`` maps every key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from airun_nb.errors import SpecError
from airun_nb.governance.agentpolicy import agent_rules

ErrorAt = Callable[[str, list[Any]], SpecError]

# alias -> native key
SEED_STEP_ALIASES = {
    "name": "id",
    "depends_on": "needs",
    "inputs": "with",
    "capability_name": "capability",
    "compensation": "compensate",
    "risk_level": "risk",
    "agent_name": "agent",
    "timeout_seconds": "timeout",
}
SEED_WORKFLOW_ALIASES = {"initial_state": "params", "max_execution_time_seconds": "deadline"}
SEED_STEP_TYPES = {"ACTION", "HUMAN_APPROVAL", "PARALLEL", "CAPABILITY", "TASK"}
REFUSED_STEP_TYPES = {
    "CONDITION": "a CONDITION step is not supported: give the step it guards a 'when:' expression",
    "COMPENSATION": "a COMPENSATION step is not supported: write it as the 'compensation:' of "
    "the step it undoes, or in 'global_compensation_steps'",
}
# Keys of the old schema that are kept as recorded metadata only.
RECORDED_WORKFLOW_KEYS = {"workflow_id"}
DEFAULT_ATTEMPTS = 3  # the old runtime's max_retries default (total attempts)
APPROVAL_KEYS = {
    "approval_message": "message",
    "message": "message",
    "approver_role": "approvers",
    "approver_roles": "approvers",
    "approvers": "approvers",
    "approval_timeout": "timeout",
    "timeout": "timeout",
    "timeout_seconds": "timeout",
    "webhook_url": "notify",  # the old guide's per-gate webhook: POSTed when the gate opens
    "context": "show",  # values shown to the approver
}
# Old gate inputs kept as a record only (the POST body is the native one).
RECORDED_APPROVAL_KEYS = ("webhook_payload",)
GATE_CAPABILITY = "human.approve"

Path = tuple[Any, ...]


@dataclass
class Translation:
    """A native document, whether it used the seed dialect, the origin of renamed keys, and
    what the seed document said that is kept as a record (``WorkflowSpec.dialect``)."""

    doc: dict[str, Any]
    seed: bool = False
    renamed: dict[Path, Path] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)

    def origin(self, path: list[Any]) -> list[Any]:
        """The path in the document as written for a path in the native document."""
        for n in range(len(path), 0, -1):
            found = self.renamed.get(tuple(path[:n]))
            if found is not None:
                return [*found, *path[n:]]
        return list(path)

    def rename(self, native: list[Any], written: list[Any]) -> None:
        if native != written:
            self.renamed[tuple(native)] = tuple(written)


def is_seed(doc: Any) -> bool:
    """Does a loaded document look like a seed-dialect workflow?"""
    if not isinstance(doc, dict):
        return False
    if any(k in doc for k in ("initial_state", "workflow_id", "enable_auto_rollback")):
        return True
    steps = doc.get("steps")
    return isinstance(steps, list) and any(
        isinstance(s, dict) and ("step_type" in s or "capability_name" in s or "name" in s)
        for s in steps
    )


def translate(doc: dict[str, Any], error: ErrorAt) -> Translation:
    """Translate a loaded workflow mapping; ``error(message, path)`` builds errors at a path of
    the document as written."""
    out = Translation({})
    agent_policy: Any = None
    global_comp: Any = None
    for key, value in doc.items():
        if key in SEED_WORKFLOW_ALIASES:
            out.seed = True
            native = SEED_WORKFLOW_ALIASES[key]
            out.rename([native], [key])
            out.doc[native] = value
        elif key == "enable_auto_rollback":
            out.seed = True
            out.doc["on_failure"] = "rollback" if value else "stop"
            out.rename(["on_failure"], [key])
        elif key in RECORDED_WORKFLOW_KEYS:
            out.seed = True
            out.record[key] = value
        elif key == "policy" and isinstance(value, list):
            out.seed = True
            agent_policy = value
        elif key == "global_compensation_steps":
            out.seed = True
            global_comp = value
        else:
            out.doc[key] = value
    if "name" not in out.doc and out.record.get("workflow_id"):
        out.doc["name"] = out.record["workflow_id"]
    steps = out.doc.get("steps")
    if isinstance(steps, list):
        out.doc["steps"] = [_step(raw, ["steps", i], out, error) for i, raw in enumerate(steps)]
        if global_comp:
            _global_compensations(global_comp, out, error)
    if agent_policy is not None:
        _agent_policy(agent_policy, out, error)
    return out


# Keys whose presence needs the translation below; a step without any is native as written.
_STEP_TRANSLATED = {
    *SEED_STEP_ALIASES,
    *("step_type", "max_retries", "approval_config", "retry_policy"),
    *("compensate", "parallel", "capability"),
}


def _step(raw: Any, path: list[Any], out: Translation, error: ErrorAt) -> Any:
    if not isinstance(raw, dict):
        return raw
    if raw.keys().isdisjoint(_STEP_TRANSLATED):
        return dict(raw)
    d: dict[str, Any] = {}
    step_type: str | None = None
    max_retries: Any = None
    approval_config: Any = None
    seed = False
    for key, value in raw.items():
        native = key
        if key in SEED_STEP_ALIASES:
            native = SEED_STEP_ALIASES[key]
        elif key == "step_type":
            seed = True
            step_type = str(value).upper()
            if step_type in REFUSED_STEP_TYPES:
                raise error(REFUSED_STEP_TYPES[step_type], [*path, "step_type"])
            if step_type not in SEED_STEP_TYPES:
                raise error(
                    f"unknown step_type '{value}' (expected one of "
                    f"{', '.join(sorted(SEED_STEP_TYPES | set(REFUSED_STEP_TYPES)))})",
                    [*path, "step_type"],
                )
            continue
        elif key == "max_retries":
            seed = True
            max_retries = value
            continue
        elif key == "approval_config":
            seed = True
            approval_config = value
            continue
        elif key == "retry_policy":
            native = "retry"
        if native != key:
            seed = True
            out.rename([*path, native], [*path, key])
        if native in d:  # e.g. id and name on one step: which one was meant?
            other = next(k for k in raw if k != key and SEED_STEP_ALIASES.get(k, k) == native)
            raise error(f"'{other}' and '{key}' both give the step's {native}; keep one", path)
        d[native] = value
    out.seed = out.seed or seed
    if step_type == "HUMAN_APPROVAL" or (
        seed and d.get("capability") == GATE_CAPABILITY and "approval" not in d
    ):
        _approval(d, approval_config, path, out)
    elif approval_config is not None:
        raise error("'approval_config' goes with step_type: HUMAN_APPROVAL", path)
    retry = d.get("retry")
    open_attempts = retry is None or (
        isinstance(retry, dict) and not {"attempts", "max_attempts"} & set(retry)
    )
    if open_attempts and "approval" not in d and seed:
        attempts: Any = None
        if max_retries is not None:
            attempts = max_retries
            if isinstance(max_retries, int) and not isinstance(max_retries, bool):
                attempts = max(1, max_retries)  # 0 means one attempt
            if retry is None:
                out.rename([*path, "retry"], [*path, "max_retries"])
        elif "capability" in d or "call" in d:
            attempts = DEFAULT_ATTEMPTS
        if attempts is not None:
            d["retry"] = {**(retry or {}), "attempts": attempts}
    if isinstance(d.get("compensate"), dict):
        d["compensate"] = _compensation(d["compensate"], [*path, "compensate"], out)
    for body in (d, d.get("compensate")):
        _old_inputs(body)
    if isinstance(d.get("parallel"), list):
        d["parallel"] = [
            _step(child, [*path, "parallel", j], out, error)
            for j, child in enumerate(d["parallel"])
        ]
    return d


# Old input names of ids that alias native capabilities.
_FILE_IDS = {"io.fs.write_file", "io.fs.read_file", "io.fs.delete", "io.fs.delete_file"}


def _old_inputs(body: Any) -> None:
    """``file_path`` is the old second name of ``path``."""
    if not isinstance(body, dict) or body.get("capability") not in _FILE_IDS:
        return
    args = body.get("with")
    if isinstance(args, dict) and "file_path" in args and "path" not in args:
        body["with"] = {("path" if k == "file_path" else k): v for k, v in args.items()}


def _approval(d: dict[str, Any], config: Any, path: list[Any], out: Translation) -> None:
    """A HUMAN_APPROVAL step: its inputs and approval_config become the gate's settings."""
    if d.get("capability") == GATE_CAPABILITY:
        del d["capability"]
    body: dict[str, Any] = {}
    sources = [d.pop("with", None) or {}]
    if isinstance(config, dict):
        sources.append(config)
    for src in sources:
        if not isinstance(src, dict):
            body["message"] = src  # the native parser reports it
            continue
        for key, value in src.items():
            if key in RECORDED_APPROVAL_KEYS:
                where = str(d.get("id"))
                out.record.setdefault("approval_inputs", {}).setdefault(where, {})[key] = value
                continue
            native = APPROVAL_KEYS.get(str(key), str(key))
            if native == "approvers":
                items = value if isinstance(value, list) else [value]
                value = [
                    a if str(key) == "approvers" or str(a).startswith("role:") else f"role:{a}"
                    for a in items
                ]
                value = [*body.get("approvers", []), *value]
            body[native] = value
    step_timeout = d.pop("timeout", None)
    if step_timeout is not None:  # the old per-step timeout, not the gate's wait
        out.record.setdefault("step_timeouts", {})[str(d.get("id"))] = step_timeout
    d["approval"] = body
    if _key(path, "with") in out.renamed:
        out.renamed[_key(path, "approval")] = out.renamed.pop(_key(path, "with"))


def _compensation(raw: dict[str, Any], path: list[Any], out: Translation) -> dict[str, Any]:
    """A compensation body's keys may use the seed names in either dialect."""
    d: dict[str, Any] = {}
    origin = out.origin(path)
    for key, value in raw.items():
        native = SEED_STEP_ALIASES.get(str(key), str(key))
        if native in ("step_name", "description", "id"):
            where = ".".join(str(p) for p in origin[:2])
            out.record.setdefault("compensations", {}).setdefault(where, {})[native] = value
            continue
        out.rename([*path, native], [*origin, key])
        d[native] = value
    return d


def _global_compensations(items: Any, out: Translation, error: ErrorAt) -> None:
    """``global_compensation_steps`` run after every per-step compensation: each becomes the
    compensation of a marker step that runs before all others (undone last, in list order)."""
    if not isinstance(items, list):
        raise error("'global_compensation_steps' must be a list", ["global_compensation_steps"])
    steps = out.doc["steps"]
    roots = [s for s in steps if isinstance(s, dict) and not s.get("needs")]
    markers: list[dict[str, Any]] = []
    for i, raw in enumerate(reversed(items)):
        j = len(items) - 1 - i
        where = ["global_compensation_steps", j]
        if not isinstance(raw, dict):
            raise error("each global compensation step is a mapping", where)
        sid = f"global_compensation_{j}"
        comp = _compensation(raw, [*where], out)
        markers.append(
            {
                "id": sid,
                "capability": "workflow.marker",
                "needs": [markers[-1]["id"]] if markers else [],
                "compensate": comp,
                "description": raw.get("description") or "global compensation",
            }
        )
    for s in roots:
        s["needs"] = [markers[-1]["id"]]
    out.doc["steps"] = [*markers, *steps]


def _agent_policy(items: list[Any], out: Translation, error: ErrorAt) -> None:
    """The per-agent ``policy:`` list, enforced as a tightening of the configured policy."""
    steps = [s for s in out.doc.get("steps") or [] if isinstance(s, dict)]
    environment = (out.doc.get("metadata") or {}).get("environment")
    rules, limits = agent_rules(items, steps, environment, error)
    out.record["agent_policy"] = items
    for s in steps:
        lim = limits.get(str(s.get("agent")))
        if not lim:
            continue
        if lim.get("attempts") is not None and "approval" not in s:
            raw = s.get("retry")
            retry: dict[str, Any] = raw if isinstance(raw, dict) else {}
            have = retry.get("attempts", 1)
            if isinstance(have, int) and have > lim["attempts"]:
                s["retry"] = {**retry, "attempts": lim["attempts"]}
        if lim.get("timeout") is not None and "approval" not in s:
            have_t = s.get("timeout")
            if not isinstance(have_t, (int, float)) or have_t > lim["timeout"]:
                s["timeout"] = lim["timeout"]
    if rules:
        out.doc["policy"] = {"rules": rules}


def _key(path: list[Any], last: Any) -> Path:
    return (*path, last)


def principals(metadata: dict[str, Any], agent: str | None) -> list[str]:
    """Who else acts in a step besides its launcher: the workflow's ``metadata.owner`` and the
    step's agent (``agent:<name>``). The policy decides the most restrictive over all of them."""
    out = []
    owner = metadata.get("owner") if isinstance(metadata, dict) else None
    if isinstance(owner, str) and owner.strip():
        out.append(owner.strip())
    if agent:
        out.append(agent if agent.startswith("agent:") else f"agent:{agent}")
    return out


def seed_names(
    steps: list[tuple[str, str | None, Any]], params: dict[str, Any], run_id: str
) -> dict[str, Any]:
    """The names a seed template sees besides ``params``/``steps``/``run``: every finished step's
    output keys flat (``{{rendered}}``) and under its name (``{{w1.path}}``), with the old keys
    of aliased capabilities; the params; and ``workflow_id`` / ``run_id`` as the run's id (the
    old runtime's meaning) unless a param gives them a value. ``steps`` is (id, capability or
    None, output) of each finished step, in the order they finished."""
    from airun_nb.capabilities.legacy import seed_output

    flat: dict[str, Any] = {}
    named: dict[str, Any] = {}
    for step_id, capability, value in steps:
        if capability:
            value = seed_output(capability, value)
        elif isinstance(value, dict) and {"approved", "actor"} <= set(value):
            value = {**value, "approver_email": value["actor"]}  # a gate, as the old state had it
        if isinstance(value, dict):
            flat.update(value)
        named[step_id] = value
    # outputs replace the initial state, as they did; a bare step name is the param first
    out = {**named, **params, **flat}
    for key in ("workflow_id", "run_id"):
        if out.get(key) in (None, ""):
            out[key] = run_id
    return out


def unknown_flat_names(spec: Any, namespace_names: set[str]) -> list[str]:
    """Flat names a seed workflow's templates use that nothing will define, each as
    ``step 'x', field 'with.path': name 'y' is undefined``. Empty when a step's outputs cannot be
    known before it runs (a user capability, code), since any name could then come from it."""
    from airun_nb.capabilities.legacy import GATE_KEYS, output_keys

    known = {"params", "steps", "run", "result", "secrets", "workflow_id", "run_id"}
    known |= namespace_names | set(spec.params) | {s.id for s in spec.steps}
    for s in spec.steps:
        if s.kind == "approval":
            known.update(GATE_KEYS)
        elif s.kind == "capability":
            keys = output_keys(str(s.body))
            if keys is None:
                return []
            known.update(keys)
        elif s.kind not in ("parallel", "foreach"):
            return []
    out = []
    for step_id, field_path, names in spec.template_names():
        allowed = known | set(spec.by_id[step_id].bindings)
        for name in sorted(names - allowed):
            out.append(f"step '{step_id}', field '{field_path}': name '{name}' is undefined")
    return out


def own_output(step_id: str, step: Any, value: Any) -> dict[str, Any]:
    """A step's own output as its seed compensation sees it: flat keys and under its name."""
    capability = step.body if step.kind == "capability" else None
    names = seed_names([(step_id, capability, value)], {}, "")
    return {k: v for k, v in names.items() if k not in ("workflow_id", "run_id")}


def check_flat_names(spec: Any, namespace_names: set[str]) -> None:
    """Flat names nothing defines are left as text when they render, as the old runtime left
    them (``airun validate`` warns about them), so nothing is refused here."""


def literal_names(spec: Any) -> set[str]:
    """Every top-level name a seed workflow's templates use (those undefined when a step
    renders stay as ``{{name}}`` text)."""
    cached: set[str] | None = spec.__dict__.get("_literal_names")
    if cached is None:
        cached = set()
        for _step, _field, names in spec.template_names():
            cached |= set(names)
        cached -= {"params", "steps", "run", "result", "secrets", *(s.id for s in spec.steps)}
        spec.__dict__["_literal_names"] = cached
    return cached
