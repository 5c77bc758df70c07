"""The seed (AI-First Runtime) dialect, translated into the native document before validation.

:func:`translate` takes the mapping loaded from YAML and returns the native mapping that
:mod:`airun_nb.spec` validates, plus where each renamed key came from, so that errors still point
at the line the user wrote. A native document passes through unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import SpecError

ErrorAt = Callable[[str, list[Any]], SpecError]

# alias -> native key
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

Path = tuple[Any, ...]


@dataclass
class Translation:
    """A native document, whether it used the seed dialect, and the origin of renamed keys."""

    doc: dict[str, Any]
    seed: bool = False
    renamed: dict[Path, Path] = field(default_factory=dict)

    def origin(self, path: list[Any]) -> list[Any]:
        """The path in the document as written for a path in the native document."""
        for n in range(len(path), 0, -1):
            found = self.renamed.get(tuple(path[:n]))
            if found is not None:
                return [*found, *path[n:]]
        return list(path)


def translate(doc: dict[str, Any], error: ErrorAt) -> Translation:
    """Translate a loaded workflow mapping; ``error(message, path)`` builds errors at a path of
    the document as written."""
    out = Translation({})
    for key, value in doc.items():
        if key in SEED_WORKFLOW_ALIASES:
            out.seed = True
            native = SEED_WORKFLOW_ALIASES[key]
            out.renamed[(native,)] = (key,)
            out.doc[native] = value
        elif key == "enable_auto_rollback":
            out.seed = True
            out.doc["on_failure"] = "rollback" if value else "stop"
            out.renamed[("on_failure",)] = (key,)
        else:
            out.doc[key] = value
    steps = out.doc.get("steps")
    if isinstance(steps, list):
        out.doc["steps"] = [_step(raw, ["steps", i], out, error) for i, raw in enumerate(steps)]
    return out


def _step(raw: Any, path: list[Any], out: Translation, error: ErrorAt) -> Any:
    if not isinstance(raw, dict):
        return raw
    d: dict[str, Any] = {}
    step_type: str | None = None
    max_retries: Any = None
    for key, value in raw.items():
        native = key
        if key in SEED_STEP_ALIASES:
            native = SEED_STEP_ALIASES[key]
        elif key == "step_type":
            out.seed = True
            step_type = str(value).upper()
            if step_type not in SEED_STEP_TYPES:
                raise error(
                    f"unknown step_type '{value}' (expected one of "
                    f"{', '.join(sorted(SEED_STEP_TYPES))})",
                    [*path, "step_type"],
                )
            continue
        elif key == "max_retries":
            out.seed = True
            max_retries = value
            continue
        elif key == "retry_policy":
            native = "retry"
        if native != key:
            out.seed = True
            out.renamed[_key(path, native)] = _key(path, key)
        d[native] = value
    if step_type == "HUMAN_APPROVAL":
        d["approval"] = d.pop("with", None) or {}
        if _key(path, "with") in out.renamed:
            out.renamed[_key(path, "approval")] = out.renamed.pop(_key(path, "with"))
    if max_retries is not None and d.get("retry") is None:
        d["retry"] = {"attempts": max_retries}
        out.renamed[_key(path, "retry")] = _key(path, "max_retries")
    if isinstance(d.get("compensate"), dict):
        d["compensate"] = _compensation(d["compensate"], [*path, "compensate"], out)
    if isinstance(d.get("parallel"), list):
        d["parallel"] = [
            _step(child, [*path, "parallel", j], out, error)
            for j, child in enumerate(d["parallel"])
        ]
    return d


def _compensation(raw: dict[str, Any], path: list[Any], out: Translation) -> dict[str, Any]:
    """A compensation body's keys may use the seed names in either dialect."""
    d: dict[str, Any] = {}
    origin = out.origin(path)
    for key, value in raw.items():
        native = SEED_STEP_ALIASES.get(str(key), str(key))
        if native != key:
            out.renamed[_key(path, native)] = _key(origin, key)
        d[native] = value
    return d


def _key(path: list[Any], last: Any) -> Path:
    return (*path, last)
