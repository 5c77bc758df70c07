"""What each step kind does once its inputs are rendered: ``call``, ``python`` and ``sql``."""

from __future__ import annotations

import hashlib
import importlib
import inspect
import os
import re
import threading
from collections.abc import Callable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa

from airun_nb.capabilities import confine
from airun_nb.capabilities.workspace import Workspace
from airun_nb.errors import AirunError
from airun_nb.settings import caps
from airun_nb.settings import environment as config
from airun_nb.store.database import quote_ident


class ResolveError(AirunError):
    """A ``call:`` target could not be found (or may not be reached)."""

    exit_kind = "not_found"


def resolve_callable(target: str, namespace: Mapping[str, Any], *, step: str) -> Callable[..., Any]:
    """Find a ``call:`` target: a function of the notebook, or ``package.module:function`` (or a
    dotted path) of a module the owner allows in the settings (``call_modules``).

    Nothing else is reached: a module that is not allowed is never imported, and a notebook
    name is followed through attributes only while they are not modules."""
    target = target.strip()
    if any(p.startswith("_") for p in target.replace(":", ".").split(".")[1:]):
        err = ResolveError(f"step '{step}': call '{target}': a name starting with '_'; refused")
        err.exit_kind = "security"
        raise err
    if ":" in target:
        module_name, _, attr = target.partition(":")
        return _import_attr(module_name, attr, target, step)
    head, _, rest = target.partition(".")
    if head in namespace:
        obj: Any = namespace[head]
        for part in rest.split(".") if rest else []:
            if inspect.ismodule(obj):
                _check_module(obj.__name__, target, step)
            obj = getattr(obj, part, None)
            if obj is None:
                raise ResolveError(f"step '{step}': call '{target}': no attribute '{part}'")
        if not callable(obj) or inspect.ismodule(obj):
            raise ResolveError(f"step '{step}': call '{target}' is not a function")
        return obj
    if "." in target:
        module_name, _, attr = target.rpartition(".")
        return _import_attr(module_name, attr, target, step)
    raise ResolveError(
        f"step '{step}': call '{target}' is not defined in the notebook "
        "(define it in a cell above, or give 'package.module:function')"
    )


def _check_module(module_name: str, target: str, step: str) -> None:
    if not caps.module_allowed(module_name):
        err = ResolveError(
            f"step '{step}': call '{target}': module {module_name} is not among the modules "
            "the settings allow (call_modules); refused"
        )
        err.exit_kind = "security"
        raise err


def _import_attr(module_name: str, attr: str, target: str, step: str) -> Callable[..., Any]:
    _check_module(module_name, target, step)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ResolveError(
            f"step '{step}': call '{target}': cannot import {module_name} ({exc})"
        ) from None
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ResolveError(f"step '{step}': call '{target}': {module_name} has no '{attr}'")
    if not callable(obj) or inspect.ismodule(obj):
        raise ResolveError(f"step '{step}': call '{target}' is not a function")
    return obj


_hash_cache: dict[int, tuple[Any, str]] = {}


def code_hash(fn: Callable[..., Any]) -> str:
    """A hash of a function's source (falling back to its bytecode), cached per code object."""
    code = getattr(fn, "__code__", None)
    key = id(code) if code is not None else id(fn)
    hit = _hash_cache.get(key)
    if hit is not None and hit[0] is (code if code is not None else fn):
        return hit[1]
    try:
        text = inspect.getsource(fn)
    except (OSError, TypeError):
        if code is not None:
            text = repr((code.co_code, code.co_consts, code.co_names))
        else:
            text = f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', repr(fn))}"
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    _hash_cache[key] = (code if code is not None else fn, digest)
    return digest


@lru_cache(maxsize=1024)
def compile_python(code: str, step: str) -> Any:
    try:
        return compile(code, f"<step {step}>", "exec")
    except SyntaxError as exc:
        raise AirunError(
            f"step '{step}': Python syntax error on line {exc.lineno} of its code: {exc.msg}"
        ) from None


def run_python(code: str, step: str, env: dict[str, Any]) -> Any:
    """Execute inline Python; the step's output is whatever it assigns to ``result``."""
    exec(compile_python(code, step), env)
    return env.get("result")


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class SqlEngine:
    """An in-memory DuckDB where SQL steps run over step outputs and notebook DataFrames.

    The connection is confined (:func:`airun_nb.capabilities.confine.duckdb_connect`): files outside the
    workspace, the store and its files, and extensions are out of reach."""

    def __init__(
        self,
        workspace_root: str | os.PathLike[str] | None = None,
        store_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self._con: duckdb.DuckDBPyConnection | None = None
        self._lock = threading.Lock()
        self._root = Path(workspace_root) if workspace_root is not None else None
        self._store = Path(store_path) if store_path is not None else None

    def _connect(self) -> duckdb.DuckDBPyConnection:
        root = self._root if self._root is not None else Workspace().root
        store = self._store if self._store is not None else config.default_db()
        return confine.duckdb_connect(":memory:", root, store)

    def run(
        self,
        sql: str,
        relations: Mapping[str, Any],
        namespace: Mapping[str, Any],
        on_cursor: Callable[[duckdb.DuckDBPyConnection], None] | None = None,
    ) -> Any:
        """Run ``sql``; ``on_cursor`` gets the cursor first, so that a caller whose time limit
        passes can ``interrupt()`` the query (DuckDB stops it, and its CPU with it)."""
        with self._lock:
            if self._con is None:
                self._con = self._connect()
            cur = self._con.cursor()
        if on_cursor is not None:
            on_cursor(cur)
        try:
            for name, value in relations.items():
                cur.register(name, value)
            for name in set(_IDENT.findall(sql)) - set(relations):
                value = namespace.get(name)
                if isinstance(value, (pd.DataFrame, pa.Table)):
                    cur.register(name, value)
            rel = cur.execute(sql)
            if rel.description is None:
                return None
            return rel.df()
        except duckdb.Error as exc:
            first = str(exc).strip().splitlines()[0]
            raise SqlError(f"{type(exc).__name__}: {first}") from None
        finally:
            cur.close()


class SqlError(Exception):
    """A SQL step's query failed (DuckDB's own message, first line)."""


def sql_relation_name(step_id: str) -> str:
    return quote_ident(step_id)
