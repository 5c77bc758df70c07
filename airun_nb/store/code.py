"""Notebook functions stored by value, so a terminal can continue a run without its kernel.

With ``%config Workflow.store_code = True`` the notebook saves, for every run it starts or
resumes, the functions its ``call:`` steps take from the notebook, pickled by value with
cloudpickle (the function's code and the globals it uses), in one table of the store
(``outputs."code/<run>"``). ``airun resume RUN`` loads them when the run's remaining steps need
them. Unpickling runs code: only a store you trust should be resumed this way, which is why the
notebook has to opt in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pyarrow as pa

from airun_nb.store.database import Store


def _table(run_id: str) -> str:
    return f"code/{run_id}"


def save(store: Store, run_id: str, functions: Mapping[str, Callable[..., Any]]) -> list[str]:
    """Store ``functions`` (name -> function) for ``run_id``; return the names stored."""
    try:
        import cloudpickle
    except ImportError as exc:  # pragma: no cover - cloudpickle ships with the jupyter extra
        raise ImportError(
            "storing code needs cloudpickle (pip install 'airun_nb[jupyter]')"
        ) from exc
    names, blobs = [], []
    for name, fn in sorted(functions.items()):
        names.append(name)
        blobs.append(cloudpickle.dumps(fn))
    store.put_table(
        _table(run_id),
        pa.table({"name": pa.array(names, pa.string()), "code": pa.array(blobs, pa.binary())}),
    )
    return names


def load(store: Store, run_id: str) -> dict[str, Callable[..., Any]]:
    """The functions stored for ``run_id`` (empty when the notebook did not store any)."""
    import pickle

    try:
        table = store.get_table(_table(run_id))
    except Exception:
        return {}
    out = {}
    for name, blob in zip(table["name"].to_pylist(), table["code"].to_pylist(), strict=True):
        out[str(name)] = pickle.loads(blob)  # the notebook opted in
    return out


def notebook_functions(
    call_targets: Iterable[str], namespace: Mapping[str, Any]
) -> dict[str, Callable[..., Any]]:
    """The notebook's own functions among ``call:`` targets (not ``module:function``)."""
    out = {}
    for target in call_targets:
        head = target.strip().split(".")[0]
        if ":" in target or head not in namespace:
            continue
        fn = namespace[head]
        if callable(fn):
            out[head] = fn
    return out
