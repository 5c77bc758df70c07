"""Notebook functions stored by value, so a terminal can continue a run without its kernel.

With ``%config Workflow.store_code = True`` the notebook saves, for every run it starts or
resumes, the functions its ``call:`` steps take from the notebook, pickled by value with
cloudpickle (the function's code and the globals it uses), in one table of the store
(``outputs."code/<run>"``). ``airun resume RUN`` loads them when the run's remaining steps need
them. Unpickling runs code, so both sides opt in: the notebook that stores it, and the resuming
side (``airun resume RUN --trust-stored-code``, ``trust_stored_code: true`` in the settings or
``AIRUN_TRUST_STORED_CODE=1``). Each function is signed with the key outside the store
(:mod:`airun_nb.store.signing`); one without a valid signature is refused, never unpickled.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pyarrow as pa

from airun_nb.store import signing
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
        blobs.append(signing.sign(cloudpickle.dumps(fn)))
    store.put_table(
        _table(run_id),
        pa.table({"name": pa.array(names, pa.string()), "code": pa.array(blobs, pa.binary())}),
    )
    return names


def stored_names(store: Store, run_id: str) -> list[str]:
    """The names of the functions stored for ``run_id``, without loading them."""
    try:
        table = store.get_table(_table(run_id))
    except Exception:
        return []
    return [str(n) for n in table["name"].to_pylist()]


def load(store: Store, run_id: str) -> dict[str, Callable[..., Any]]:
    """The functions stored for ``run_id`` (empty when the notebook did not store any); the
    caller has opted in. :class:`~airun_nb.store.signing.SignatureError` when one of them is
    not signed with this user's key, before any of them is unpickled."""
    import pickle

    try:
        table = store.get_table(_table(run_id))
    except Exception:
        return {}
    names = [str(n) for n in table["name"].to_pylist()]
    payloads = [
        signing.verify(blob, f"the stored code of '{name}' (run {run_id})")
        for name, blob in zip(names, table["code"].to_pylist(), strict=True)
    ]
    return {name: pickle.loads(payload) for name, payload in zip(names, payloads, strict=True)}


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
