"""Expansion of ``foreach`` steps into one step per item, fixed when a run is planned."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from airun_nb.errors import SpecError
from airun_nb.settings import caps
from airun_nb.spec import templates
from airun_nb.spec.digest import digest as _hash
from airun_nb.spec.model import RetryPolicy, StepSpec, WorkflowSpec


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
        cap = caps.foreach_max_items()
        if len(items) > cap:
            raise SpecError(
                f"step '{s.id}': 'foreach' gave {len(items)} items, more than the {cap} the "
                "settings allow (foreach_max_items); refused"
            )
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
