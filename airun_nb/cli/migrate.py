"""``airun validate``, ``airun convert`` and ``airun exec``: moving seed-dialect files over.

``validate`` checks workflow and policy files of either dialect without running anything and
prints every problem it finds; ``convert`` prints a workflow's native equivalent; ``exec`` runs a
workflow file outside a notebook with the old bridge's exit codes.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import click
import yaml

from airun_nb.cli.storeoption import STORE
from airun_nb.errors import AirunError, SpecError, TemplateError, WorkflowFailed
from airun_nb.governance import policy as policy_mod
from airun_nb.governance import seedpolicy as policy_dialect
from airun_nb.spec import dialect
from airun_nb.spec.validation import _load, is_policy, old_kind, problems, read_input
from airun_nb.yamlreader import safe as yamlsafe

EXIT = {
    "ok": 0,
    "paused": 30,
    "validation": 10,
    "permission": 11,
    "security": 12,
    "not_found": 13,
    "timeout": 15,
    "internal": 20,
}


def failure_kind(run_id: str, db: Path | None) -> str:
    """The exit-code kind of a failed run, from what the store recorded (a denial, the type of
    the error that ended a step), never from the words of an error message."""
    from airun_nb.history.frames import events

    rows = events(run_id, db=db)
    if (rows["kind"] == "step_denied").any():
        return "permission"
    for detail in rows.loc[rows["kind"] == "step_failed", "detail"]:
        kind = json.loads(detail or "{}").get("error_kind")
        if kind in EXIT:
            return str(kind)
    return "internal"


@click.command("validate")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--strict", is_flag=True, help="Warnings (what would stop a run here) count too.")
def validate_cmd(files: tuple[Path, ...], strict: bool) -> None:
    """Check workflow and policy files (either dialect) without running them. Every problem is
    printed; errors (the file does not load) exit 10, warnings (an unregistered capability, an
    undefined template name) only with --strict."""
    bad = 0
    for path in files:
        if not path.is_file() and not path.exists():  # a missing file: exit 10, in a line
            click.echo(f"{path}: no such file")
            bad += 1
            continue
        try:
            kind, found = problems(path)
        except AirunError as exc:  # the file cannot be read or is not YAML: one line, exit 10
            bad += 1
            click.echo(exc.message if str(path) in exc.message else f"{path}: {exc.message}")
            continue
        soft = ("note:",) if strict else ("note:", "warning:")
        errors = [p for p in found if not p.startswith(soft)]
        bad += bool(errors)
        if kind not in ("workflow", "policy"):
            click.echo(f"{path}: {kind}, not a workflow or policy")
        else:
            click.echo(f"{path}: {kind} {'ok' if not errors else f'{len(errors)} problem(s)'}")
        for p in found:
            click.echo(f"  {p}")
    sys.exit(EXIT["validation"] if bad else 0)


def native_document(path: Path) -> dict[str, Any]:
    """The native-dialect document of a workflow or policy file."""
    doc = _load(path)
    other = old_kind(doc)
    if other is not None:
        raise SpecError(f"{path}: a {other[0]}, nothing to convert; {other[1][0][6:]}")
    if is_policy(doc):
        policy_mod.parse(doc, source=str(path), check_capabilities=False)  # it loads
        if policy_dialect.is_seed_policy(doc):
            try:
                return policy_dialect.native(doc, source=str(path))
            except policy_dialect.SeedPolicyError as exc:
                raise policy_mod.PolicyError(exc.message) from None
        return dict(doc)
    if not isinstance(doc, dict):
        raise SpecError(f"{path}: a workflow is a mapping with a 'steps:' list")

    def error(message: str, where: list[Any]) -> SpecError:
        return SpecError(message, path=".".join(map(str, where)))

    out = dialect.translate(doc, error)
    native = out.doc
    if out.seed:
        native = rewrite_templates(native)
    if out.record:
        native.setdefault("metadata", {})
        native["metadata"] = {**native["metadata"], "seed": out.record}
    return native


_FLAT = re.compile(r"\{\{\s*([A-Za-z_]\w*)((?:\.\w+)*)\s*(\|[^{}]*)?\}\}")
_RUN_NAMES = ("workflow_id", "run_id")


def rewrite_templates(doc: dict[str, Any]) -> dict[str, Any]:
    """Seed lookups in native form, each meaning what it meant in its step: ``{{step.key}}`` ->
    ``{{ steps.step.key }}``; ``{{x}}`` -> the output of the nearest upstream step that gives
    ``x`` (outputs replaced the initial state), else ``{{ params.x }}``, else the output of an
    upstream step whose keys are not known before it runs; ``{{workflow_id}}`` / ``{{run_id}}``
    -> the param of that name when given, else the run's id; a name nothing defines stays as
    text, as the old runtime left it. A compensation reads its own step's output by name."""
    from airun_nb.capabilities.legacy import GATE_KEYS, output_keys

    params = dict(doc.get("params") or {})
    steps = [s for s in doc.get("steps") or [] if isinstance(s, dict)]
    by_id = {str(s.get("id")): s for s in steps}
    for s in steps:  # the steps of a parallel block are steps too
        for child in s.get("parallel") or []:
            if isinstance(child, dict):
                by_id[str(child.get("id"))] = {**child, "needs": s.get("needs") or []}

    def gives(s: dict[str, Any]) -> tuple[str, ...] | None:
        if "approval" in s:
            return tuple(GATE_KEYS)
        if "parallel" in s:
            return ()
        keys = output_keys(str(s.get("capability", "")))
        return tuple(keys) if keys is not None else None

    order = list(by_id)
    ancestors: dict[str, list[str]] = {}

    def upstream(sid: str) -> list[str]:
        if sid not in ancestors:
            ancestors[sid] = []
            found: set[str] = set()
            for n in by_id.get(sid, {}).get("needs") or []:
                found |= {str(n), *upstream(str(n))}
            ancestors[sid] = [x for x in order if x in found]
        return ancestors[sid]

    used_run_names: set[str] = set()

    def lookup_filtered(m: re.Match[str], sid: str, own: bool) -> str:
        filters = m.group(3)
        found = lookup(m.group(1), m.group(2), sid, own)
        if not found or not filters:
            return found or m.group(0)
        if found.startswith("{{ '{{' }}"):
            return m.group(0) if filters else found  # nothing defines it: an error either way
        return found[: -len(" }}")] + " " + filters.strip() + " }}"

    def lookup(name: str, rest: str, sid: str, own: bool) -> str:
        if name in ("params", "steps", "run", "secrets", "result"):
            return ""
        if own:
            keys = gives(by_id[sid])
            if keys is None or name in keys:
                return f"{{{{ steps.{sid}.{name}{rest} }}}}"
        if name in by_id and (rest or name not in params):
            if "approval" in by_id[name] and rest.startswith(".approver_email"):
                rest = ".actor" + rest[len(".approver_email") :]  # the seed's name of it
            return f"{{{{ steps.{name}{rest} }}}}"
        up = upstream(sid)
        for u in reversed(up):
            keys = gives(by_id[u])
            if keys is not None and name in keys:
                key = "actor" if name == "approver_email" and "approval" in by_id[u] else name
                return f"{{{{ steps.{u}.{key}{rest} }}}}"
        if name in _RUN_NAMES:
            used_run_names.add(name)
            return f"{{{{ params.get('{name}') or run.id }}}}"
        if name in params:
            return f"{{{{ params.{name}{rest} }}}}"
        unknown = [u for u in up if gives(by_id[u]) is None]
        if unknown:
            return f"{{{{ steps.{unknown[-1]}.{name}{rest} }}}}"
        if rest:
            return ""  # {{x.y}} of nothing: an error in both forms
        return "{{ '{{' }}" + name + "{{ '}}' }}"  # literal text, as the old runtime left it

    def walk(v: Any, sid: str, own: bool) -> Any:
        if isinstance(v, str):
            return _FLAT.sub(lambda m: lookup_filtered(m, sid, own), v)
        if isinstance(v, dict):
            return {k: walk(x, sid, own) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x, sid, own) for x in v]
        return v

    def step(s: dict[str, Any]) -> dict[str, Any]:
        sid = str(s.get("id"))
        out: dict[str, Any] = {}
        for key, value in s.items():
            if key == "parallel" and isinstance(value, list):
                out[key] = [step(c) if isinstance(c, dict) else c for c in value]
            elif key == "compensate":
                out[key] = walk(value, sid, True)
            elif key in ("id", "needs"):
                out[key] = value
            else:
                out[key] = walk(value, sid, False)
        return out

    new_steps = [step(s) if isinstance(s, dict) else s for s in doc.get("steps") or []]
    for name in sorted(used_run_names):
        params.setdefault(name, "")  # an --input of that name is taken, as before
    out = {**doc, "steps": new_steps}
    if params:
        out["params"] = params
    return out


def differences(path: Path, native: dict[str, Any]) -> tuple[str, list[str]]:
    """(what the file is, every difference between it and ``native``, its converted form)."""
    from airun_nb.cli import convertcheck
    from airun_nb.spec.parser import parse

    doc = _load(path)
    text = dump(native)
    if is_policy(doc):
        a = policy_mod.parse(doc, source=str(path), check_capabilities=False)
        b = policy_mod.parse(yaml.safe_load(text), source="converted", check_capabilities=False)
        return "policy", convertcheck.policy_differences(a, b)
    wa = parse(path.read_text(), file_stem=path.stem)
    wb = parse(text, file_stem=path.stem)
    return "workflow", convertcheck.workflow_differences(wa, wb)


class _Plain(yaml.SafeDumper):
    """YAML without anchors: a converted file reads like one written by hand."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump(doc: Any) -> str:
    return yaml.dump(doc, Dumper=_Plain, sort_keys=False, allow_unicode=True)


@click.command("convert")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument(
    "converted", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--check",
    is_flag=True,
    help="Do not print it: ask both forms the same questions and list every difference.",
)
def convert_cmd(file: Path, converted: Path | None, check: bool) -> None:
    """Print the native-dialect equivalent of a workflow or policy file; it decides and renders
    as the original does. --check proves it (exit 0 when no difference, 1 otherwise); with a
    second file, --check compares FILE with that one (a converted file you edited)."""
    if converted is not None and not check:
        raise click.UsageError("a second file goes with --check")
    native = native_document(file) if converted is None else _load(converted)
    if not isinstance(native, dict):
        raise SpecError(f"{converted}: not a workflow or policy mapping")
    if not check:
        click.echo(dump(native), nl=False)
        return
    kind, found = differences(file, native)
    if not found:
        click.echo(f"{file}: the converted {kind} decides and renders as the original")
        return
    click.echo(f"{file}: the converted {kind} differs from the original in {len(found)} case(s)")
    for line in found:
        click.echo(f"  {line}")
    sys.exit(1)


def _inputs(items: tuple[str, ...], defaults: dict[str, Any]) -> dict[str, Any]:
    """``--input`` values are text, as the old bridge passed them, unless the param's value in
    the file is a number, a boolean, a list or a mapping: then the text is read as one."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.UsageError(f"--input takes KEY=VALUE, got {item!r}")
        out[key] = _typed(key, value, defaults.get(key))
    return out


_KINDS_OF = ((bool, "true or false"), ((int, float), "a number"), (list, "a list"))


def _typed(key: str, value: str, default: Any) -> Any:
    if default is None or isinstance(default, str):
        return value
    try:
        typed = yaml.safe_load(value) if value else None
    except yaml.YAMLError:
        typed = value
    if isinstance(default, dict):
        want: tuple[type, ...] | type = dict
        what = "a mapping"
    else:
        want, what = next(
            ((t, w) for t, w in _KINDS_OF if isinstance(default, t)), (type(default), "as given")
        )
    ok = isinstance(typed, want) and not (want is not bool and isinstance(typed, bool))
    if not ok:
        raise SpecError(f"--input {key}={value!r}: {key} is {what} in the workflow file")
    return typed


def param_value(key: str, value: str, option: str) -> Any:
    """A ``KEY=VALUE`` option's value as plain YAML (a tag or a bad document is one line)."""
    if not value.strip():
        return ""
    try:
        return yamlsafe.load(value, where=f"{option} {key}")
    except yamlsafe.YamlLimitError as exc:
        raise SpecError(exc.message) from None
    except yaml.YAMLError as exc:
        first = str(getattr(exc, "problem", None) or exc).strip().splitlines()[0]
        raise SpecError(f"{option} {key}: {first}") from None


def execute(file: Path, inputs: dict[str, Any], db: Path | None) -> tuple[int, dict[str, Any]]:
    """Run a workflow file; (exit code, result record)."""
    from airun_nb.workflow import Workflow

    record: dict[str, Any] = {"file": str(file)}
    try:
        read_input(file)  # a regular file of bounded size, or one line
        wf = Workflow.from_file(file)
        record["workflow"] = wf.name
        result = wf.run(db=db, params=inputs or None)
    except WorkflowFailed as exc:
        record.update(run_id=exc.run_id, status=exc.status, error=exc.message)
        kind = failure_kind(exc.run_id, db)  # from what the store recorded, not the words
        if kind == "not_found" and "capability" not in exc.message:
            kind = "internal"  # a missing file while running: the old RESOURCE_NOT_FOUND, 20
        return EXIT[kind], record
    except (SpecError, TemplateError, policy_mod.PolicyError) as exc:
        record.update(status="invalid", error=exc.message)
        kind = exc.exit_kind or "validation"
        return EXIT[kind if kind in EXIT else "validation"], record
    except AirunError as exc:
        record.update(status="error", error=exc.message)
        return EXIT[exc.exit_kind if exc.exit_kind in EXIT else "internal"], record
    record.update(run_id=result.run_id, status=result.status)
    return EXIT["paused" if result.status == "waiting" else "ok"], record


def _file_params(file: Path) -> dict[str, Any]:
    """The params a workflow file gives (``params:`` or ``initial_state:``), {} if unreadable."""
    try:
        doc = _load(file)
    except AirunError:
        return {}
    if not isinstance(doc, dict):
        return {}
    found = doc.get("params", doc.get("initial_state"))
    return dict(found) if isinstance(found, dict) else {}


@click.command("exec")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--input", "-i", "inputs", multiple=True, help="KEY=VALUE param (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON line.")
@click.option(
    "--db",
    type=STORE,
    envvar="AIRUN_DB",
    help="Store file or postgresql:// URL (default: $AIRUN_DB or ./airun.duckdb).",
)
def exec_cmd(file: Path, inputs: tuple[str, ...], as_json: bool, db: Path | None) -> None:
    """Run a workflow file; exit 0 done, 30 waiting at a gate, 10 invalid, 11 denied, 12
    refused by the sandbox, 13 capability or file not found, 15 timed out, 20 anything else
    (a run that failed and rolled back too)."""
    try:
        given = _inputs(inputs, _file_params(file))
    except SpecError as exc:
        code = EXIT["validation"]
        record: dict[str, Any] = {"file": str(file), "status": "invalid", "error": exc.message}
    else:
        code, record = execute(file, given, db)
    record["exit_code"] = code
    if as_json:
        click.echo(json.dumps(record, default=str))
    else:
        line = f"{record.get('status')}: {record.get('workflow', file)}"
        if record.get("run_id"):
            line += f" (run {record['run_id']})"
        click.echo(line)
        if record.get("error"):
            click.echo(f"error: {record['error']}", err=True)
    sys.exit(code)


COMMANDS = [validate_cmd, convert_cmd, exec_cmd]
