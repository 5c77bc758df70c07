"""Code fingerprints: what a step's code really depends on, as named components.

A ``call`` step's fingerprint covers its function's syntax tree (comments and docstrings do not
count), every notebook or project function it calls (transitively), the globals and closure
variables those functions read, and the version of every installed package they reach (the walk
stops there). An inline ``python:`` step gets the same for the names its code reads.

Each component is a name (``function load_sales``, ``helper normalize``, ``global THRESHOLD``,
``closure factor``, ``package pandas``) with a hash and a short value to show, so that a later run
can say exactly what changed (:func:`changes`). Values are hashed by content: plain values by
their representation, DataFrames with :func:`pandas.util.hash_pandas_object` (big ones by the
bytes of their columns, see :mod:`airun_nb.store.framehash`), arrays by their bytes, other objects by
their pickle; an object that cannot be hashed is listed as not tracked.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata as metadata
import inspect
import pickle
import sys
import sysconfig
import textwrap
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from airun_nb.governance import audit as auditlog
from airun_nb.store import code as codestore
from airun_nb.store import framehash

# Names every step's code sees that are not the notebook's.
STEP_NAMES = frozenset({"params", "steps", "run", "result", "secrets", "__builtins__"})
UNTRACKED = "not tracked"
_PLAIN = (type(None), bool, int, float, complex, str, bytes)
_SHOW = 40  # characters of a value shown in a reason

Components = dict[str, list[str]]  # component -> [hash, shown value]


def _sha(text: str | bytes) -> str:
    data = text.encode() if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()[:16]


@dataclass
class Fingerprint:
    """A step's code fingerprint: its components and one digest over them."""

    components: Components = field(default_factory=dict)
    _digest: str | None = field(default=None, repr=False, compare=False)

    @property
    def digest(self) -> str:
        """The hash of the code components (values are compared one by one, see
        :func:`value_part`): a run resumes whatever its own steps did to the notebook's state."""
        if self._digest is None:
            code = code_part(self.components)
            self._digest = _sha(repr(sorted((k, v[0]) for k, v in code.items()))) if code else ""
        return self._digest

    @property
    def untracked(self) -> list[str]:
        return sorted(k.split(" ", 2)[-1] for k, v in self.components.items() if v[0] == UNTRACKED)


def _site_dirs() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    dirs = {paths.get(k, "") for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    dirs |= {p for p in sys.path if p.endswith(("site-packages", "dist-packages"))}
    return tuple(sorted(d for d in dirs if d))


_SITE = _site_dirs()
_by_module: dict[str, str | None] = {}  # top-level module -> distribution (packages_distributions)


class Fingerprinter:
    """Fingerprints for one planning pass; every object is looked at once per pass."""

    def __init__(self, namespace: Mapping[str, Any]) -> None:
        self.namespace = namespace
        self._functions: dict[int, tuple[Any, Components]] = {}
        self._values: dict[int, tuple[Any, tuple[str, str] | None]] = {}
        self._dists: dict[str, tuple[str, str] | None] = {}
        self._calls: dict[tuple[int, str], tuple[Any, Fingerprint]] = {}

    # ------------------------------------------------------------------ entry points
    def of_function(self, fn: Callable[..., Any], name: str) -> Fingerprint:
        """A ``call`` step's function, named as its step calls it."""
        key = (id(fn), name)
        hit = self._calls.get(key)
        if hit is not None and hit[0] is fn:
            return hit[1]  # shared: fingerprints are never changed in place
        fp = Fingerprint()
        self._calls[key] = (fn, fp)
        origin = self.origin(fn)
        if origin is None:
            fp.components[f"function {name}"] = [_code_hash(fn), "changed"]
            fp.components.update(self._reads_of(fn))
        elif isinstance(origin, tuple):
            dist, version = origin
            fp.components[f"package {dist}"] = [version, version]
        return fp

    def of_code(self, source: str, *, bound: frozenset[str] = frozenset()) -> Fingerprint:
        """An inline ``python:`` step: the notebook names its code reads."""
        return self.of_names(_names_read(source) - STEP_NAMES - bound)

    def of_names(self, names: set[str] | frozenset[str]) -> Fingerprint:
        """The notebook names given (those the notebook defines) and what they lead to."""
        fp = Fingerprint()
        for name in sorted(names):
            if name in self.namespace:
                self._name(fp.components, "global", name, self.namespace[name])
        return fp

    # ------------------------------------------------------------------ walking
    def _reads_of(self, fn: Any) -> Components:
        """What a project function reads: its globals, closure and the helpers they lead to."""
        key = id(fn)
        hit = self._functions.get(key)
        if hit is not None and hit[0] is fn:
            return hit[1]
        out: Components = {}
        self._functions[key] = (fn, out)  # a recursive helper finds itself here
        code = getattr(fn, "__code__", None)
        if code is None:
            return out
        fn_globals: Mapping[str, Any] = getattr(fn, "__globals__", {})
        names = set(_code_names(code))
        prefix = _module_prefix(fn)
        for name in sorted(names):
            if name in fn_globals:
                self._name(out, "global", prefix + name, fn_globals[name], names)
        for name, cell in zip(
            code.co_freevars, getattr(fn, "__closure__", None) or (), strict=False
        ):
            try:
                value = cell.cell_contents
            except ValueError:
                continue  # not bound yet
            self._name(out, "closure", name, value, names)
        return out

    def _name(
        self,
        out: Components,
        role: str,
        name: str,
        value: Any,
        attrs: set[str] | None = None,
    ) -> None:
        """Record what reading ``name`` (bound to ``value``) depends on."""
        if isinstance(value, types.ModuleType):
            origin = self.origin(value)
            if origin is None:  # a project module: the functions of it that are used
                for attr in sorted(attrs or ()):
                    member = getattr(value, attr, None)
                    if isinstance(member, types.FunctionType) and self.origin(member) is None:
                        self._helper(out, member)
            elif origin != "builtin":
                out[f"package {origin[0]}"] = [origin[1], origin[1]]
            return
        if isinstance(value, (types.FunctionType, types.MethodType, type)):
            origin = self.origin(value)
            if origin is None:
                if isinstance(value, type):
                    out[f"class {value.__qualname__}"] = [_class_hash(value), "changed"]
                else:
                    self._helper(out, getattr(value, "__func__", value))
            elif origin != "builtin":
                out[f"package {origin[0]}"] = [origin[1], origin[1]]
            return
        if callable(value):
            origin = self.origin(value)
            if origin is not None and origin != "builtin":
                out[f"package {origin[0]}"] = [origin[1], origin[1]]
                return
            if origin == "builtin":
                return
        hashed = self.value_hash(value)
        if hashed is None:
            out[f"{role} {name}"] = [UNTRACKED, type(value).__name__]
        else:
            digest, shown = hashed
            # A secret-named global, or a value that looks like a credential, is never shown
            # (why() and the stored fingerprint say "changed" instead).
            if auditlog.is_secret_key(name) or auditlog.redact_text(shown) != shown:
                shown = auditlog.REDACTED
            out[f"{role} {name}"] = [digest, shown]

    def _helper(self, out: Components, fn: Any) -> None:
        out[f"helper {_display_name(fn)}"] = [_code_hash(fn), "changed"]
        out.update(self._reads_of(fn))

    # ------------------------------------------------------------------ values
    def value_hash(self, value: Any) -> tuple[str, str] | None:
        """(content hash, short text) of a value; None when it cannot be hashed."""
        key = id(value)
        hit = self._values.get(key)
        if hit is not None and hit[0] is value:
            return hit[1]
        result = _value_hash(value)
        self._values[key] = (value, result)
        return result

    # ------------------------------------------------------------------ origins
    def origin(self, obj: Any) -> tuple[str, str] | str | None:
        """Where ``obj`` comes from: None (the notebook or the project), "builtin" (the
        standard library), or (distribution, version) of the installed package."""
        module = obj.__name__ if isinstance(obj, types.ModuleType) else _module_of(obj)
        if not module or module == "__main__":
            return None
        top = module.split(".")[0]
        if top in sys.stdlib_module_names or top in ("builtins", "__future__"):
            return "builtin"
        if top in self._dists:
            return self._dists[top] or self._unpackaged(obj)
        found = _distribution_of(top, _file_of(obj))
        self._dists[top] = found
        return found or self._unpackaged(obj)

    @staticmethod
    def _unpackaged(obj: Any) -> str | None:
        path = _file_of(obj)
        if path and path.startswith(_SITE):
            return "builtin"  # installed without metadata: nothing to version
        return None


# ---------------------------------------------------------------------- comparing
VALUE_ROLES = ("global", "closure")


def value_part(components: Mapping[str, Any]) -> dict[str, Any]:
    """The components that are values a step reads (globals, closure variables)."""
    return {k: v for k, v in components.items() if k.split(" ", 1)[0] in VALUE_ROLES}


def code_part(components: Mapping[str, Any]) -> dict[str, Any]:
    """The components that are code (functions, helpers, classes, packages, cache version)."""
    return {k: v for k, v in components.items() if k.split(" ", 1)[0] not in VALUE_ROLES}


def changes(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> list[str]:
    """What differs between two stored component maps, in words."""
    if old is None:
        return []
    out: list[str] = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a is not None and b is not None and a[0] == b[0]:
            continue
        role, _, name = key.partition(" ")
        if a is None:
            out.append(f"{key} (new)")
        elif b is None:
            out.append(f"{key} (no longer used)")
        elif role == "package":
            out.append(f"{name} {a[1]} → {b[1]}")
        elif role == "cache":
            out.append(f"cache version {a[1]} → {b[1]}")
        elif role in ("global", "closure"):
            if b[0] == UNTRACKED or a[0] == UNTRACKED:
                continue  # an untracked value is named as such, not as a change
            out.append(f"{key} {a[1]} → {b[1]}" if a[1] != b[1] else f"{key} changed")
        else:
            out.append(key)
    return out


# ---------------------------------------------------------------------- helpers
def _code_names(code: types.CodeType) -> Iterator[str]:
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_names(const)


def _module_of(obj: Any) -> str | None:
    module = getattr(obj, "__module__", None)
    if module is None and not isinstance(obj, type):
        module = getattr(type(obj), "__module__", None)
    return module if isinstance(module, str) else None


def _module_prefix(fn: Any) -> str:
    module = getattr(fn, "__module__", None)
    return "" if module in (None, "__main__") else f"{module}."


def _file_of(obj: Any) -> str | None:
    if isinstance(obj, types.ModuleType):
        return getattr(obj, "__file__", None)
    code = getattr(obj, "__code__", None)
    if code is not None:
        return str(code.co_filename)
    module = sys.modules.get(_module_of(obj) or "")
    return getattr(module, "__file__", None) if module is not None else None


def _distribution_of(top: str, path: str | None) -> tuple[str, str] | None:
    try:
        dist = metadata.distribution(top)
        return dist.metadata["Name"] or top, dist.version
    except metadata.PackageNotFoundError:
        pass
    if not (path and path.startswith(_SITE)):
        return None
    if not _by_module:
        for mod, dists in metadata.packages_distributions().items():
            _by_module[mod] = dists[0] if dists else None
    name = _by_module.get(top)
    if name is None:
        return None
    try:
        return name, metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _display_name(fn: Any) -> str:
    module = getattr(fn, "__module__", None)
    qual = getattr(fn, "__qualname__", getattr(fn, "__name__", repr(fn)))
    return qual if module in (None, "__main__") else f"{module}.{qual}"


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                node.body = body[1:] or [ast.Pass()]
    return tree


_code_hashes: dict[int, tuple[Any, str]] = {}  # id(code object) -> (code object, hash)


def _code_hash(fn: Any) -> str:
    """The hash of a function's syntax tree without docstrings (bytecode when no source),
    computed once per code object (a redefined function has a new one)."""
    code = getattr(fn, "__code__", None)
    hit = _code_hashes.get(id(code)) if code is not None else None
    if hit is not None and hit[0] is code:
        return hit[1]
    digest = _tree_hash(fn)
    if code is not None:
        _code_hashes[id(code)] = (code, digest)
    return digest


def _tree_hash(fn: Any) -> str:
    try:
        try:
            source = textwrap.dedent(inspect.getsource(fn))
        except OSError:  # a function loaded from the store: the source stored with it
            stored = codestore.source_of(fn.__code__) if hasattr(fn, "__code__") else None
            if stored is None:
                raise
            source = textwrap.dedent(stored)
        tree = ast.parse(source)
        node = next(
            (
                n
                for n in ast.walk(tree)
                if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            ),
            tree,
        )
        return _sha(ast.dump(_strip_docstrings(node), annotate_fields=False))
    except (OSError, TypeError, SyntaxError):
        code = getattr(fn, "__code__", None)
        if code is None:
            return _sha(_display_name(fn))
        return _sha(repr(_code_tuple(code)))


def _code_tuple(code: types.CodeType) -> tuple[Any, ...]:
    consts = tuple(
        _code_tuple(c) if isinstance(c, types.CodeType) else repr(c) for c in code.co_consts
    )
    return (code.co_code, consts, code.co_names)


def _class_hash(cls: type) -> str:
    parts = []
    for name, member in sorted(vars(cls).items()):
        if isinstance(member, (types.FunctionType, classmethod, staticmethod, property)):
            target = getattr(member, "__func__", None) or getattr(member, "fget", None) or member
            parts.append((name, _code_hash(target)))
        elif isinstance(member, _PLAIN):
            parts.append((name, repr(member)))
    return _sha(repr(parts))


def _names_read(source: str) -> set[str]:
    """Names inline code reads that it does not assign itself."""
    try:
        tree = ast.parse(textwrap.dedent(source))
    except SyntaxError:
        return set()
    loaded: set[str] = set()
    stored: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (loaded if isinstance(node.ctx, ast.Load) else stored).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            stored.add(node.name)
        elif isinstance(node, ast.alias):
            stored.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.arg):
            stored.add(node.arg)
    return loaded - stored


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SHOW else text[: _SHOW - 1] + "…"


def _value_hash(value: Any) -> tuple[str, str] | None:
    if isinstance(value, _PLAIN):
        return _sha(type(value).__name__ + repr(value)), _show(value)
    if isinstance(value, (list, tuple, set, frozenset, dict)):
        try:
            text = repr(_canonical(value))
        except _Unhashable:
            return None
        return _sha(text), _show(value)
    module = type(value).__module__.split(".")[0]
    if module == "pandas":
        import pandas as pd

        if isinstance(value, (pd.DataFrame, pd.Series, pd.Index)):
            meta = repr((type(value).__name__, list(map(str, getattr(value, "columns", [])))))
            meta += repr(getattr(value, "dtypes", getattr(value, "dtype", "")))
            shape = "x".join(str(n) for n in value.shape)
            try:
                if framehash.shallow_bytes(value) >= framehash.BIG_FRAME_BYTES:
                    digest = framehash.digest(value, meta)
                else:
                    rows = pd.util.hash_pandas_object(value, index=True).to_numpy()
                    digest = _sha(meta.encode() + rows.tobytes())
            except (TypeError, ValueError):
                return None
            return digest, f"{type(value).__name__} {shape}"
    if module == "numpy" and hasattr(value, "tobytes") and hasattr(value, "dtype"):
        try:
            data = value.tobytes()
        except (TypeError, ValueError):
            return None
        return _sha(repr((value.dtype, getattr(value, "shape", ()))).encode() + data), _show(value)
    try:
        blob = pickle.dumps(value, protocol=4)
    except Exception:
        return None
    return _sha(blob), _show(value)


class _Unhashable(Exception):
    pass


def _canonical(value: Any, depth: int = 0) -> Any:
    if depth > 20:
        raise _Unhashable
    if isinstance(value, _PLAIN):
        return (type(value).__name__, value)
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [_canonical(v, depth + 1) for v in value])
    if isinstance(value, (set, frozenset)):
        return (type(value).__name__, sorted(repr(_canonical(v, depth + 1)) for v in value))
    if isinstance(value, dict):
        items = [
            (repr(_canonical(k, depth + 1)), _canonical(v, depth + 1)) for k, v in value.items()
        ]
        return ("dict", sorted(items, key=lambda kv: kv[0]))
    hashed = _value_hash(value)
    if hashed is None:
        raise _Unhashable
    return hashed[0]
