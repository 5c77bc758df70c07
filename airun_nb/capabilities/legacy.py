"""The seed runtime's stdlib ids (see :mod:`.legacy_fs`, :mod:`.legacy_sys`, :mod:`.legacy_data`,
:mod:`.legacy_net`), the ids that need outside services, and the old output keys of the ids that
alias native capabilities (``io.fs.read_file`` gives ``content`` and ``size``...)."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from typing import Any

from airun_nb.capabilities import legacy_data, legacy_fs, legacy_net, legacy_sys  # noqa: F401  (register them)
from airun_nb.capabilities.registry import _REGISTRY as _BUILT
from airun_nb.capabilities.registry import ALIASES, CapabilityError, canonical

# Old ids that talk to outside services (the old repository's external and generated
# capability specs among them): the user registers them.
EXTERNAL_PREFIXES = (
    *("web.browser.", "crm.", "cloud.", "email.", "audit."),
    *("io.presentation.", "io.file.pdf", "net.github.", "net.finance.", "net.search."),
)


def missing_hint(name: str) -> str | None:
    """The message for an unregistered id that the old runtime served from outside."""
    if name == "sys.undo":
        return (
            "capability 'sys.undo' is not a step here: a run's steps are undone through their "
            "compensations, `airun rollback RUN --steps N` for the last N"
        )
    if name.startswith(EXTERNAL_PREFIXES) or name == "email.send":
        return (
            f"capability '{name}' needs an outside service and is not built in; register it "
            f"with `airun_nb.register_capability('{name}', fn, undo=...)` before the run "
            "(docs/migrating.md shows how, for a YAML capability spec too)"
        )
    return None


def hint(exc: CapabilityError) -> str:
    """The message of a failed look-up, with how to register an outside service's id."""
    name = re.search(r"unknown capability '([^']+)'", exc.message)
    if name is None:
        return exc.message
    found = missing_hint(name.group(1))
    if found:
        return found
    close = difflib.get_close_matches(name.group(1), sorted(capability_names()), n=1)
    if close:
        return f"unknown capability '{name.group(1)}' (did you mean '{close[0]}'?)"
    return (
        f"unknown capability '{name.group(1)}': it is not built in; register it with "
        f"`airun_nb.register_capability('{name.group(1)}', fn)` before the run"
    )


def capability_names() -> set[str]:
    """Every registered capability and alias."""
    return {*_BUILT, *ALIASES}


def seed_output(capability: str, value: Any) -> Any:
    """A native capability's result with the old runtime's keys added, for seed templates."""
    real = canonical(capability)
    if real == capability:
        return value
    if real == "fs.read" and isinstance(value, (str, bytes)):
        return {"content": value, "size": len(value), "success": True}
    if isinstance(value, Mapping):
        out = {**value, "success": True}
        if real == "fs.write" and "bytes" in value:
            out["bytes_written"] = value["bytes"]
        if real == "fs.delete":
            out["deleted"] = value.get("deleted", True)
        return out
    return value


_OK = ("success",)
# The output keys of each old id (and of native capabilities as seed templates see them).
OUTPUT_KEYS: dict[str, tuple[str, ...]] = {
    "io.fs.hash_file": ("checksum_sha256", *_OK),
    "io.fs.list_dir": ("entries", "count", *_OK),
    "io.fs.exists": ("exists", "is_file", "is_dir", *_OK),
    "io.fs.write_bytes": ("file_path", "bytes_written", "checksum", *_OK),
    "sys.info.get_time": ("timestamp", "timezone", *_OK),
    "sys.info.get_os": ("os_name", "version", "architecture", "python_version", "hostname", *_OK),
    "sys.info.get_env_var": ("value", "found", *_OK),
    "sys.exec.run": ("stdout", "stderr", "exit_code", *_OK),
    "sys.archive.zip": ("archive_path", "file_count", "compressed_size", *_OK),
    "net.http.get": ("status_code", "body", "headers", *_OK),
    "net.http.post": ("status_code", "body", "headers", *_OK),
    "net.http.put": ("status_code", "body", "headers", *_OK),
    "data.json.parse": ("data", *_OK),
    "data.json.stringify": ("json_string", *_OK),
    "data.json.get": ("value", *_OK),
    "text.regex.match": ("matches", "matched", *_OK),
    "text.template.render": ("rendered", *_OK),
    "math.pandas.calculate": ("calculated_metrics", *_OK),
    "io.pdf.extract_table": ("extracted_tables", *_OK),
    "workflow.marker": _OK,
    "fs.read": ("content", "size", *_OK),
    "fs.write": ("path", "bytes", "bytes_written", *_OK),
    "fs.copy": ("source", "destination", *_OK),
    "fs.move": ("source", "destination", *_OK),
    "fs.mkdir": ("path", *_OK),
    "fs.delete": ("path", "deleted", *_OK),
    "http.request": ("status", "headers", "body", "json", *_OK),
    "shell.run": ("returncode", "stdout", "stderr", *_OK),
}
GATE_KEYS = ("decision", "approved", "actor", "channel", "comment", "decided_at", "approver_email")


def output_keys(capability: str) -> tuple[str, ...] | None:
    """The keys a capability's result has, or None when they cannot be known before it runs."""
    found = OUTPUT_KEYS.get(capability)
    return found if found is not None else OUTPUT_KEYS.get(canonical(capability))
