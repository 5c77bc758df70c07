"""Validation of workflow and policy files without running anything: what a file is (a
workflow, a policy, or a file of the seed runtime that is neither) and every problem in it.

``airun validate`` prints these; the MCP server's ``validate_workflow`` returns them as data.
"""

from __future__ import annotations

import stat
import warnings
from pathlib import Path
from typing import Any

import yaml

from airun_nb.capabilities.registry import CapabilityError
from airun_nb.errors import AirunError, SpecError
from airun_nb.governance import policy as policy_mod
from airun_nb.spec import dialect
from airun_nb.yamlreader import safe as yamlsafe


def read_input(path: Path) -> str:
    """A workflow or policy file's text: a regular file (never a device or a FIFO), at most the
    settings' ``input_max_bytes``, UTF-8. Anything else is one line (a SpecError)."""
    from airun_nb.settings import caps

    try:
        info = path.stat()
    except OSError as exc:
        err = SpecError(f"cannot read {path}: {exc.strerror}")
        err.exit_kind = "not_found" if isinstance(exc, FileNotFoundError) else None
        raise err from None
    if not stat.S_ISREG(info.st_mode):
        raise SpecError(f"{path} is not a regular file; refused")
    cap = caps.input_max_bytes()
    try:
        with open(path, "rb") as f:
            data = f.read(cap + 1)
    except OSError as exc:
        raise SpecError(f"cannot read {path}: {exc.strerror}") from None
    if len(data) > cap:
        raise SpecError(
            f"{path} is larger than the {cap} bytes the settings allow (input_max_bytes); refused"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def _load(path: Path) -> Any:
    try:
        return yamlsafe.load(read_input(path), where=str(path))  # node and alias limits
    except yamlsafe.YamlLimitError as exc:
        raise SpecError(exc.message) from None
    except OSError as exc:
        raise SpecError(f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise SpecError(f"{path}:{line} invalid YAML") from None


def is_policy(doc: Any) -> bool:
    return isinstance(doc, dict) and "rules" in doc and "steps" not in doc


def old_kind(doc: Any) -> tuple[str, list[str]] | None:
    """The old repository's other YAML files (pack manifests, skill facades, capability specs):
    what the file is, and a note on what replaces it. None for anything else."""
    if not isinstance(doc, dict) or "steps" in doc:
        return None
    if "pack_id" in doc and ("includes" in doc or "state" in doc):
        includes: dict[str, Any] = doc["includes"] if isinstance(doc.get("includes"), dict) else {}
        flows = ", ".join(map(str, includes.get("workflows") or [])) or "none"
        return "pack manifest", [
            f"note: pack '{doc['pack_id']}' (workflows: {flows}) is not a workflow: a pack is "
            "a folder of workflow files here, each run with `airun exec FILE`; its state "
            f"({doc.get('state', 'unset')}) has no equivalent: a policy file decides who may "
            "run what"
        ]
    if "routes" in doc and ("triggers" in doc or "examples" in doc):
        routes: dict[str, Any] = doc["routes"] if isinstance(doc.get("routes"), dict) else {}
        primary: dict[str, Any] = (
            routes["primary"] if isinstance(routes.get("primary"), dict) else {}
        )
        target = f"{primary.get('type', 'workflow')} '{primary.get('ref', '?')}'"
        return "skill facade", [
            f"note: facade '{doc.get('name', '?')}' is not a workflow: it routes to {target}; "
            "run that workflow's file with `airun exec FILE` (or Workflow.from_file); its "
            "triggers and examples were for a chat front end and are not used"
        ]
    meta = doc.get("meta") if isinstance(doc.get("meta"), dict) else None
    if meta is not None and isinstance(doc.get("adapter"), dict):
        adapter = doc["adapter"]
        conf = adapter.get("config") if isinstance(adapter.get("config"), dict) else {}
        how = f"{adapter.get('type', '?')} adapter"
        if adapter.get("type") == "http_api":
            how += f", {conf.get('method', 'GET')} {conf.get('endpoint_url', '?')}"
            instead = (
                "register it with `airun_nb.register_capability_spec(PATH)` before the run, or "
                "call it as a step `capability: http.request` with `{method: "
                f"{conf.get('method', 'GET')}, url: {conf.get('endpoint_url', '?')}}}` (the "
                "policy's hosts: and the egress checks apply either way)"
            )
        else:
            instead = f"register a function: `airun_nb.register_capability('{meta.get('id')}', fn)`"
        return "capability spec", [
            f"note: capability spec '{meta.get('id', '?')}' ({how}) is not a workflow: {instead}"
        ]
    if "id" in doc and ("handler" in doc or "operation_type" in doc) and "parameters" in doc:
        return "capability spec", [
            f"note: capability spec '{doc['id']}' (Python handler {doc.get('handler', '?')}) is "
            f"not a workflow: register a function with `airun_nb.register_capability("
            f"'{doc['id']}', fn)` before the run"
        ]
    return None


def problems(path: Path) -> tuple[str, list[str]]:
    """What a file is (``workflow``/``policy``, or one of the old repository's other kinds)
    and every problem found in it."""
    from airun_nb.capabilities import get
    from airun_nb.capabilities.legacy import hint
    from airun_nb.spec.parser import parse

    doc = _load(path)
    other = old_kind(doc)
    if other is not None:
        return other
    if is_policy(doc):
        try:
            pol = policy_mod.parse(doc, source=str(path), check_capabilities=False)
        except AirunError as exc:
            return "policy", [exc.message]
        notes = pol.first_match.unmatched if pol.first_match is not None else []
        return "policy", [f"note: {n} names no built-in capability yet" for n in notes]
    found: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            spec = parse(read_input(path), file_stem=path.stem)
        except AirunError as exc:
            return "workflow", [exc.message, *_each_step(doc, exc.message)]
    for s in spec.steps:
        if s.kind == "capability":
            try:
                get(str(s.body))
            except AirunError as exc:
                why = hint(exc) if isinstance(exc, CapabilityError) else exc.message
                found.append(f"warning: step '{s.id}': {why}")
    if spec.seed_dialect:
        found.extend(f"warning: {p}" for p in dialect.unknown_flat_names(spec, set()))
    return "workflow", found


def _each_step(doc: Any, first: str) -> list[str]:
    """The problems of each step on its own (after the first error of the whole file), so one
    validation shows them all; dependencies are left out, they are checked with the file."""
    from airun_nb.spec.parser import from_dict

    if not isinstance(doc, dict) or not isinstance(doc.get("steps"), list):
        return []
    out: list[str] = []
    for i, raw in enumerate(doc["steps"]):
        if not isinstance(raw, dict):
            continue
        alone = {k: v for k, v in raw.items() if k not in ("depends_on", "needs")}
        try:
            from_dict({**doc, "name": "check", "steps": [alone]})
        except SpecError as exc:
            where = (exc.path or "steps[0]").replace("steps[0]", f"steps[{i}]", 1)
            found = f"{where}: {exc.reason}"
            if exc.reason not in first and found not in out:
                out.append(found)
        except AirunError as exc:
            if exc.message not in first:
                out.append(f"steps[{i}]: {exc.message}")
    return out
