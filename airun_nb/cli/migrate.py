"""``airun validate``, ``airun convert`` and ``airun exec``: moving seed-dialect files over.

``validate`` checks workflow and policy files of either dialect without running anything and
prints every problem it finds; ``convert`` prints a workflow's native equivalent; ``exec`` runs a
workflow file outside a notebook with the old bridge's exit codes.
"""

from __future__ import annotations

import json
import re
import stat
import sys
import warnings
from pathlib import Path
from typing import Any

import click
import yaml

from airun_nb.errors import AirunError, SpecError, TemplateError, WorkflowFailed
from airun_nb.governance import policy as policy_mod
from airun_nb.governance import seedpolicy as policy_dialect
from airun_nb.spec import dialect, yamlsafe

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


def problems(path: Path) -> tuple[str, list[str]]:
    """What a file is (``workflow``/``policy``) and every problem found in it."""
    from airun_nb.capabilities import get
    from airun_nb.capabilities.legacy import missing_hint
    from airun_nb.spec.parser import parse

    doc = _load(path)
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
                why = missing_hint(str(s.body)) or exc.message
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


@click.command("validate")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--strict", is_flag=True, help="Warnings (what would stop a run here) count too.")
def validate_cmd(files: tuple[Path, ...], strict: bool) -> None:
    """Check workflow and policy files (either dialect) without running them. Every problem is
    printed; errors (the file does not load) exit 10, warnings (an unregistered capability, an
    undefined template name) only with --strict."""
    bad = 0
    for path in files:
        try:
            kind, found = problems(path)
        except AirunError as exc:  # the file cannot be read or is not YAML: one line, exit 10
            bad += 1
            click.echo(exc.message if str(path) in exc.message else f"{path}: {exc.message}")
            continue
        soft = ("note:",) if strict else ("note:", "warning:")
        errors = [p for p in found if not p.startswith(soft)]
        bad += bool(errors)
        click.echo(f"{path}: {kind} {'ok' if not errors else f'{len(errors)} problem(s)'}")
        for p in found:
            click.echo(f"  {p}")
    sys.exit(EXIT["validation"] if bad else 0)


def native_document(path: Path) -> dict[str, Any]:
    """The native-dialect document of a workflow or policy file."""
    doc = _load(path)
    if is_policy(doc):
        pol = policy_mod.parse(doc, source=str(path), check_capabilities=False)
        if pol.first_match is not None:
            return policy_dialect.as_native(pol.first_match)
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


_FLAT = re.compile(r"\{\{\s*([A-Za-z_]\w*)((?:\.\w+)*)\s*\}\}")


def rewrite_templates(doc: dict[str, Any]) -> dict[str, Any]:
    """Seed lookups in native form: ``{{x}}`` -> ``{{ params.x }}`` or the step output that gives
    it, ``{{step.key}}`` -> ``{{ steps.step.key }}``, ``{{workflow_id}}`` -> ``{{ run.id }}``."""
    from airun_nb.capabilities.legacy import GATE_KEYS, output_keys

    params = doc.get("params") or {}
    steps = [s for s in doc.get("steps") or [] if isinstance(s, dict)]
    ids = {str(s.get("id")) for s in steps}
    giver: dict[str, str] = {}
    for s in steps:
        keys = GATE_KEYS if "approval" in s else output_keys(str(s.get("capability", ""))) or ()
        for k in keys:
            giver.setdefault(k, str(s.get("id")))

    def one(m: re.Match[str]) -> str:
        name, rest = m.group(1), m.group(2)
        if name in ("params", "steps", "run", "secrets"):
            return m.group(0)
        if name in ids:
            return f"{{{{ steps.{name}{rest} }}}}"
        if name in params and params[name] != "":
            return f"{{{{ params.{name}{rest} }}}}"
        if name in ("workflow_id", "run_id"):
            return "{{ run.id }}"
        if name in giver:
            return f"{{{{ steps.{giver[name]}.{name}{rest} }}}}"
        return m.group(0)

    def walk(v: Any) -> Any:
        if isinstance(v, str):
            return _FLAT.sub(one, v)
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        return v

    return {**doc, "steps": walk(doc.get("steps"))}


@click.command("convert")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def convert_cmd(file: Path) -> None:
    """Print the native-dialect equivalent of a workflow or policy file."""
    click.echo(yaml.safe_dump(native_document(file), sort_keys=False, allow_unicode=True), nl=False)


def _inputs(items: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.UsageError(f"--input takes KEY=VALUE, got {item!r}")
        out[key] = param_value(key, value, "--input")
    return out


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
        kind = failure_kind(exc.run_id, db)
        if kind in ("internal", "not_found") and exc.status == "rolled_back":
            kind = "ok"
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


@click.command("exec")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--input", "-i", "inputs", multiple=True, help="KEY=VALUE param (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON line.")
@click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="AIRUN_DB",
    help="Store file (default: $AIRUN_DB or ./airun.duckdb).",
)
def exec_cmd(file: Path, inputs: tuple[str, ...], as_json: bool, db: Path | None) -> None:
    """Run a workflow file; exit 0 done or rolled back, 30 waiting at a gate, 10 invalid,
    11 denied, 12 refused by the sandbox, 13 not found, 15 timed out, 20 anything else."""
    try:
        given = _inputs(inputs)
    except SpecError as exc:  # a bad --input is invalid input: 10, like a bad file
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(EXIT["validation"])
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
