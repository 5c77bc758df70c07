"""Checks over a parsed workflow's graph: known ids, implicit dependencies, no cycles."""

from __future__ import annotations

import ast
import difflib
from collections.abc import Callable
from typing import Any

from airun_nb.errors import SpecError, TemplateError
from airun_nb.spec import templates
from airun_nb.spec.model import WorkflowSpec, _template_fields

ErrorAt = Callable[[str, list[Any]], SpecError]


def suggest(word: Any, options: Any) -> str:
    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def check_graph(spec: WorkflowSpec, paths: dict[str, list[Any]], error: ErrorAt) -> None:
    """Raise ``error(message, path)`` for duplicate or unknown ids, unknown template steps and
    cycles; add the dependencies that code and templates imply to each step's ``needs``."""
    seen: set[str] = set()
    for s in spec.steps:
        if s.id in seen:
            raise error(f"duplicate step id '{s.id}'", paths.get(s.id, ["steps"]))
        seen.add(s.id)
    ids = {s.id for s in spec.steps}
    for s in spec.steps:
        for n in s.needs:
            if n not in ids:
                raise error(
                    f"step '{s.id}' needs unknown step '{n}'{suggest(n, ids)}",
                    [*paths.get(s.id, []), "needs"],
                )
            if n == s.id:
                raise error(f"step '{s.id}' needs itself", [*paths.get(s.id, []), "needs"])
        if s.kind == "python":
            for ref in sorted(_python_refs(str(s.body))):
                if ref not in ids:
                    raise error(
                        f"step '{s.id}': its code reads steps.{ref}, an unknown step"
                        f"{suggest(ref, ids)}",
                        [*paths.get(s.id, []), "python"],
                    )
                if ref != s.id and ref not in s.needs:
                    s.needs.append(ref)
        # Template references add implicit dependencies; check names are known.
        for field_path, source in _template_fields(s) if s.templated else ():
            try:
                names, step_refs = templates.references(source)
                if spec.seed_dialect:  # the seed dialect's {{w1.path}} reads step w1 too
                    step_refs = step_refs | ((names & ids) - set(spec.params))
            except TemplateError as exc:
                raise error(
                    f"step '{s.id}', field '{field_path}': {exc}",
                    [*paths.get(s.id, []), field_path.split(".")[0].split("[")[0]],
                ) from None
            for ref in step_refs:
                if ref not in ids:
                    raise error(
                        f"step '{s.id}', field '{field_path}': unknown step "
                        f"'{ref}'{suggest(ref, ids)}",
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
        raise error(
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


def _find_cycle(spec: WorkflowSpec) -> list[str] | None:
    # Most workflows list each step after the steps it needs: that order is then a topological
    # one, and there is no cycle to look for.
    position = {s.id: i for i, s in enumerate(spec.steps)}
    if all(position[n] < i for i, s in enumerate(spec.steps) for n in s.needs):
        return None
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
