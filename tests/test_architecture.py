"""The package's shape: the folders are the layers, imports flow one way, no circles; SQL on the
store's tables stays in the store; one writer changes state.

Every ``import`` in the package counts, including the ones inside functions (a lazy import is
still a dependency); imports made only for type checking do not.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "airun_nb"

# The layers, top to bottom. A module may import modules of its own package and of the packages
# of lower layers, never of a higher one. Front ends stand side by side at the top (``cli``
# starts the others: ``airun serve``, ``airun dashboard``, ``airun run``).
LAYERS: dict[str, int] = {
    "cli": 100,
    "jupyter": 90,
    "service": 90,
    "dashboard": 90,
    "mcp": 90,
    "workflow": 80,  # the workflow API: workflow.py, result.py, testing.py
    "result": 80,
    "testing": 80,
    "history": 70,
    "engine": 60,
    "gates": 50,
    "spec": 45,
    "governance": 40,
    "capabilities": 35,
    "store": 30,
    "settings": 20,
    "yamlreader": 10,
    "errors": 0,
}
# Where SQL on the store's tables may be written (history keeps its analytic reads).
SQL_HOMES = ("airun_nb.store", "airun_nb.history")
STORE_TABLES = ("runs", "steps", "attempts", "approvals", "audit", "events", "specs", "tokens")
FRONT_ENDS = (
    "airun_nb.jupyter",
    "airun_nb.cli",
    "airun_nb.service",
    "airun_nb.dashboard",
    "airun_nb.mcp",
)


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(current: str, is_pkg: bool, node: ast.ImportFrom, known: set[str]) -> list[str]:
    base_parts = current.split(".") if is_pkg else current.split(".")[:-1]
    if node.level:
        base_parts = base_parts[: len(base_parts) - (node.level - 1)]
        base = ".".join(base_parts)
        target = f"{base}.{node.module}" if node.module else base
    else:
        target = node.module or ""
    out = []
    for alias in node.names:
        sub = f"{target}.{alias.name}"
        if sub in known:
            out.append(sub)
        elif target in known:
            out.append(target)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                if node.module == "__future__":
                    continue
                for dep in _resolve(name, is_pkg, node, known):
                    if dep != name:
                        graph[name].add(dep)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in known and alias.name != name:
                        graph[name].add(alias.name)
    return graph


def _is_type_only(path: Path) -> set[int]:
    """Line numbers of imports under ``if TYPE_CHECKING:`` (not dependencies at run time)."""
    tree = ast.parse(path.read_text())
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for sub in ast.walk(node):
                if isinstance(sub, (ast.Import, ast.ImportFrom)):
                    lines.add(sub.lineno)
    return lines


def _runtime_graph() -> dict[str, set[str]]:
    """Like :func:`_graph`, leaving out imports made for type checking only."""
    mods = _modules()
    known = set(mods)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        skip = _is_type_only(path)
        tree = ast.parse(path.read_text())
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(tree):
            if getattr(node, "lineno", None) in skip:
                continue
            if isinstance(node, ast.ImportFrom) and node.module != "__future__":
                graph[name].update(d for d in _resolve(name, is_pkg, node, known) if d != name)
            elif isinstance(node, ast.Import):
                graph[name].update(a.name for a in node.names if a.name in known and a.name != name)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            # A package's __init__ re-exporting its own submodules is not a circle of design.
            if w.startswith(v + ".") or v.startswith(w + "."):
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circles() -> None:
    graph = _runtime_graph()
    graph.pop("airun_nb", None)  # the package entry point re-exports the public API
    for deps in graph.values():
        deps.discard("airun_nb")
    assert _cycles(graph) == []


def test_the_cycle_finder_sees_a_circle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] != "__main__" else None


def test_every_module_belongs_to_a_layer() -> None:
    """A new module or package must be placed in the picture (and in docs/architecture.md)."""
    unplaced = [m for m in _modules() if _layer(m) is not None and _layer(m) not in LAYERS]
    assert unplaced == []


def test_imports_flow_down_the_layers() -> None:
    wrong = []
    for mod, deps in _runtime_graph().items():
        here = _layer(mod)
        if here is None:
            continue
        for dep in deps:
            there = _layer(dep)
            if there is None or there == here:
                continue
            if LAYERS[there] > LAYERS[here] or (
                LAYERS[there] == LAYERS[here] and LAYERS[here] < 80
            ):
                wrong.append(f"{mod} -> {dep}")
    assert wrong == []


def test_the_layer_check_sees_an_upward_import(tmp_path: Path) -> None:
    assert LAYERS["store"] < LAYERS["engine"]  # so store -> engine would be listed above


def _sql_on_store_tables(text: str) -> bool:
    import re

    tables = "|".join(STORE_TABLES)
    return bool(re.search(rf"\b(FROM|INTO|UPDATE|JOIN)\s+({tables})\b", text))


def test_sql_on_the_store_tables_stays_in_the_store() -> None:
    """Front ends, the engine and the gates ask the store by name (store/queries.py)."""
    wrong = [
        name
        for name, path in _modules().items()
        if not name.startswith(SQL_HOMES) and _sql_on_store_tables(path.read_text())
    ]
    assert wrong == []
    assert _sql_on_store_tables('x = "SELECT * FROM runs WHERE run_id = ?"')


def test_one_writer_changes_state() -> None:
    """Only the checked writer (store/transitions.py) appends records to the store."""
    writers = []
    for name, path in _modules().items():
        if name in ("airun_nb.store.transitions", "airun_nb.store.database"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("record", "record_many")
                and "store" in ast.unparse(node.func.value).lower()
            ):
                writers.append(f"{name}:{node.lineno}")
    assert writers == []


def test_the_core_knows_no_front_end() -> None:
    graph = _graph()
    wrong = []
    for mod, deps in graph.items():
        if mod in ("airun_nb", "airun_nb.__main__") or mod.startswith(FRONT_ENDS):
            continue
        wrong += [f"{mod} -> {d}" for d in deps if d.startswith(FRONT_ENDS)]
    assert wrong == []
    for name, path in _modules().items():
        if name in ("airun_nb", "airun_nb.__main__") or name.startswith(FRONT_ENDS):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                top = [(node.module or "")] if isinstance(node, ast.ImportFrom) else names
                for t in top:
                    assert not t.startswith(("IPython", "ipywidgets")), f"{name} imports {t}"


def test_only_the_settings_read_the_environment() -> None:
    """Every AIRUN_* variable is read in the settings package (environment.py holds the typed
    object; clock.py the test hook that shifts this process's clock)."""
    import re

    reads = re.compile(r"(environ(\.get)?\s*[\[(]|getenv\()\s*[\"']AIRUN_")
    wrong = [
        name
        for name, path in _modules().items()
        if not name.startswith("airun_nb.settings")
        and name != "airun_nb.store.crashpoints"  # the crash-test hook, read where it fires
        and reads.search(path.read_text())
    ]
    assert wrong == []
    assert reads.search('os.environ.get("AIRUN_DB")')
