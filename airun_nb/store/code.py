"""Notebook functions stored by value, so a terminal can continue a run without its kernel.

With ``%config Workflow.store_code = True`` the notebook saves, for every run it starts or
resumes, the functions its ``call:`` steps take from the notebook, pickled by value with
cloudpickle (the function's code and the globals it uses), in one table of the store
(``outputs."code/<run>"``), with their source (``outputs."code/<run>/sources"``) so that their
fingerprints where they are loaded are the ones they had where they were stored. ``airun resume
RUN`` loads them when the run's remaining steps need them. Unpickling runs code, so both sides
opt in: the notebook that stores it, and the resuming side (``airun resume RUN
--trust-stored-code``, ``trust_stored_code: true`` in the settings or
``AIRUN_TRUST_STORED_CODE=1``). Each function is signed with the key outside the store
(:mod:`airun_nb.store.signing`); one without a valid signature is refused, never unpickled.
"""

from __future__ import annotations

import contextlib
import inspect
import types
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from airun_nb.store import signing
from airun_nb.store.backend import Backend


def _table(run_id: str) -> str:
    return f"code/{run_id}"


def _sources_table(run_id: str) -> str:
    return f"code/{run_id}/sources"


def save(store: Backend, run_id: str, functions: Mapping[str, Callable[..., Any]]) -> list[str]:
    """Store ``functions`` (name -> function) for ``run_id``; return the names stored."""
    try:
        import cloudpickle
    except ImportError as exc:  # pragma: no cover - cloudpickle ships with the jupyter extra
        raise ImportError(
            "storing code needs cloudpickle (pip install 'airun_nb[jupyter]')"
        ) from exc
    import pyarrow as pa  # here: the planner reads stored sources without it

    names, blobs = [], []
    for name, fn in sorted(functions.items()):
        names.append(name)
        blobs.append(signing.sign(cloudpickle.dumps(fn)))
    store.put_table(
        _table(run_id),
        pa.table({"name": pa.array(names, pa.string()), "code": pa.array(blobs, pa.binary())}),
    )
    # The source of every function stored (and the notebook helpers it calls), so that their
    # fingerprints (which hash the source) are the same where they are loaded as where they
    # were stored: the pickles do not keep the cell they came from.
    texts = {_key(fn): text for fn in _functions(functions.values()) if (text := _source(fn))}
    store.put_table(
        _sources_table(run_id),
        pa.table(
            {
                "function": pa.array(list(texts), pa.string()),
                "text": pa.array(list(texts.values()), pa.string()),
            }
        ),
    )
    return names


# The source of functions loaded from the store, by code object (see :func:`source_of`).
_loaded: dict[int, tuple[types.CodeType, str]] = {}


def source_of(code: types.CodeType) -> str | None:
    """The stored source of a function loaded by :func:`load`, by its code object."""
    hit = _loaded.get(id(code))
    return hit[1] if hit is not None and hit[0] is code else None


def _key(fn: types.FunctionType) -> str:
    return f"{fn.__qualname__}:{fn.__code__.co_firstlineno}"


def _source(fn: types.FunctionType) -> str | None:
    try:
        return inspect.getsource(fn)
    except (OSError, TypeError):
        return source_of(fn.__code__)


def _functions(functions: Iterable[Callable[..., Any]]) -> list[types.FunctionType]:
    """The functions and the notebook functions they call or close over, transitively."""
    todo = [fn for fn in functions if isinstance(fn, types.FunctionType)]
    found: dict[int, types.FunctionType] = {}
    while todo:
        fn = todo.pop()
        if id(fn) in found:
            continue
        found[id(fn)] = fn
        codes = [fn.__code__]
        while codes:
            code = codes.pop()
            codes.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
            for name in code.co_names:
                value = fn.__globals__.get(name)
                if isinstance(value, types.FunctionType) and value.__module__ == fn.__module__:
                    todo.append(value)
        for cell in fn.__closure__ or ():
            with contextlib.suppress(ValueError):
                if isinstance(cell.cell_contents, types.FunctionType):
                    todo.append(cell.cell_contents)
    return list(found.values())


def stored_names(store: Backend, run_id: str) -> list[str]:
    """The names of the functions stored for ``run_id``, without loading them."""
    try:
        table = store.get_table(_table(run_id))
    except Exception:
        return []
    return [str(n) for n in table["name"].to_pylist()]


def load(store: Backend, run_id: str) -> dict[str, Callable[..., Any]]:
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
    out = {name: pickle.loads(payload) for name, payload in zip(names, payloads, strict=True)}
    try:
        sources = store.get_table(_sources_table(run_id))
    except Exception:  # stored before sources were kept
        return out
    texts = dict(zip(sources["function"].to_pylist(), sources["text"].to_pylist(), strict=True))
    for fn in _functions(out.values()):
        text = texts.get(_key(fn))
        if text is not None:
            _loaded[id(fn.__code__)] = (fn.__code__, str(text))
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
