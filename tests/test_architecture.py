"""The package's shape: imports flow one way, no circles, modules and classes stay small.

Every ``import`` in the package counts, including the ones inside functions (a lazy import is
still a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "airun_nb"

# The main line of the core, top to bottom: a module may import only modules of a lower layer
# (or of its own layer's helpers below it). Modules not listed are leaves that are checked for
# circles only.
LAYERS: dict[str, int] = {
    "airun_nb.workflow": 60,
    "airun_nb.result": 55,
    "airun_nb.engine.runner": 50,
    "airun_nb.engine.scheduler": 45,
    "airun_nb.engine.execution": 45,
    "airun_nb.engine.compensation": 44,
    "airun_nb.engine.gatekeeper": 44,
    "airun_nb.governance.verdict": 42,
    "airun_nb.engine.planner": 40,
    "airun_nb.engine.ledger": 38,
    "airun_nb.engine.scope": 38,
    "airun_nb.engine.state": 30,
    "airun_nb.gates.gate": 30,
    "airun_nb.store.database": 20,
    "airun_nb.store.idle": 15,
    "airun_nb.store.slots": 16,
    "airun_nb.store.fold": 14,
    "airun_nb.store.journal": 11,
    "airun_nb.store.lease": 10,
}
FRONT_ENDS = (
    "airun_nb.jupyter",
    "airun_nb.cli.main",
    "airun_nb.service",
    "airun_nb.dashboard",
    "airun_nb.mcp",
    "airun_nb.cli.agents",
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


def test_imports_flow_down_the_layers() -> None:
    graph = _runtime_graph()
    wrong = []
    for mod, deps in graph.items():
        if mod not in LAYERS:
            continue
        for dep in deps:
            if dep in LAYERS and LAYERS[dep] >= LAYERS[mod] and dep != mod:
                wrong.append(f"{mod} -> {dep}")
    assert wrong == []


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
