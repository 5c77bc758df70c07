"""The parsed-spec cache: a workflow's text is parsed and validated once, then found by its hash.

Re-running a big ``%%workflow`` cell mostly re-parses text that has not changed. The key is one
SHA-256 over the parser's own source files, the name, the line offset and the text, so editing
the cell, renaming it or upgrading airun_nb all miss. Hits come from this process (the last
:data:`MEMORY_ENTRIES` specs) or, for texts of at least :data:`STORE_MIN_CHARS` characters,
from the store's ``spec_cache`` table, so a fresh process resuming a big run does not
re-validate it either. Stored entries are pickles signed with the key outside the store
(:mod:`airun_nb.store.signing`) and read back by an unpickler that only builds the spec
model's classes and plain values; an unsigned entry, or anything else, is a miss and the text
is parsed.
Parsing runs with the cyclic garbage collector paused.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import io
import pickle
from collections import OrderedDict
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import duckdb

from airun_nb.errors import AirunError, StoreError
from airun_nb.spec import parser as spec_mod
from airun_nb.spec.model import WorkflowSpec
from airun_nb.store import signing
from airun_nb.store.backend import Backend
from airun_nb.store.opening import open_store

MEMORY_ENTRIES = 32
STORE_MIN_CHARS = 16_384  # below this, parsing costs less than a store lookup
_PARSER_MODULES = (
    "spec.py",
    "specmodel.py",
    "specgraph.py",
    "dialect.py",
    "digest.py",
    "durations.py",
    "foreach.py",
    "templates.py",
    "yamlsafe.py",
    "yamlplain.py",
    "specparts.py",
    "agentpolicy.py",
    "speccache.py",
)
_ALLOWED = {
    ("airun_nb.spec.model", "WorkflowSpec"),
    ("airun_nb.spec.model", "StepSpec"),
    ("airun_nb.spec.model", "RetryPolicy"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("datetime", "date"),
    ("datetime", "datetime"),
    ("datetime", "time"),
    ("datetime", "timedelta"),
    ("datetime", "timezone"),
    ("collections", "OrderedDict"),
}
_memory: OrderedDict[str, WorkflowSpec] = OrderedDict()
stats = {"memory": 0, "store": 0, "parsed": 0}  # where each spec came from (for tests, bench)


class _NoStore:
    def __repr__(self) -> str:
        return "NO_STORE"


NO_STORE: Any = _NoStore()


@lru_cache(maxsize=1)
def parser_id() -> str:
    """A hash of the parser's source: a changed parser never reads an older cache entry."""
    h = hashlib.sha256()
    here = Path(__file__).parent
    for name in _PARSER_MODULES:
        with contextlib.suppress(OSError):
            h.update(name.encode() + b"\0" + (here / name).read_bytes())
    return h.hexdigest()


def cache_key(
    text: str, name: str | None = None, line_offset: int = 0, file_stem: str | None = None
) -> str:
    """One pass of SHA-256 over the parser id, the parse arguments and the text."""
    head = f"{parser_id()}\0{name or ''}\0{line_offset}\0{file_stem or ''}\0"
    return hashlib.sha256((head + text).encode()).hexdigest()


def parse(
    text: str,
    *,
    name: str | None = None,
    line_offset: int = 0,
    file_stem: str | None = None,
    db: Any = NO_STORE,
) -> WorkflowSpec:
    """:func:`airun_nb.spec.parser.parse`, cached. ``db`` (a store path, or None for the default
    store) also looks in, and fills, that store's cache for big texts."""
    key = cache_key(text, name, line_offset, file_stem)
    hit = _memory.get(key)
    if hit is not None:
        _memory.move_to_end(key)
        stats["memory"] += 1
        return hit
    use_store = db is not NO_STORE and len(text) >= STORE_MIN_CHARS
    spec = _load(db, key) if use_store else None
    if spec is not None:
        stats["store"] += 1
    else:
        with _gc_paused():
            spec = spec_mod.parse(text, name=name, line_offset=line_offset, file_stem=file_stem)
        stats["parsed"] += 1
        if use_store:
            _save(db, key, spec)
    _memory[key] = spec
    while len(_memory) > MEMORY_ENTRIES:
        _memory.popitem(last=False)
    return spec


def forget() -> None:
    """Empty this process's cache (the store's entries stay)."""
    _memory.clear()


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


class _SpecUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not part of a parsed workflow")
        return super().find_class(module, name)


def _store(db: Any) -> Backend | None:
    try:
        return open_store(db, create=False)  # parsing creates no store; the run will
    except StoreError:
        return None


def _load(db: Any, key: str) -> WorkflowSpec | None:
    store = _store(db)
    if store is None:
        return None
    try:
        data = store.cached_spec(key)
    except (duckdb.Error, StoreError):
        return None
    if data is None:
        return None
    try:
        payload = signing.verify(data, "a cached workflow")  # a planted entry is a miss
        with _gc_paused():
            spec = _SpecUnpickler(io.BytesIO(payload)).load()
    except Exception:  # a damaged or foreign entry is a miss, never a failure
        return None
    return spec if isinstance(spec, WorkflowSpec) else None


def _save(db: Any, key: str, spec: WorkflowSpec) -> None:
    store = _store(db)
    if store is None:
        return
    try:
        data = signing.sign(pickle.dumps(spec, protocol=pickle.HIGHEST_PROTOCOL))
    except (AirunError, OSError):
        return  # no signing key to be had: the cache goes without
    # A cache entry is not history: it is written straight to DuckDB, not journaled, and a
    # store that cannot take it (busy, read-only) simply goes without.
    with contextlib.suppress(duckdb.Error, StoreError):
        store.cache_spec(key, data)
