"""cachedembed's modules import each other without a cycle, function-local imports included.

A cycle makes import order matter and hides which layer depends on which; a
function-local import only postpones it. Imports under ``if TYPE_CHECKING:`` never run
and are allowed.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "cachedembed"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_package(name: str) -> bool:
    return (PACKAGE.parent / name.replace(".", "/") / "__init__.py").exists()


def _is_module(name: str) -> bool:
    return _is_package(name) or (PACKAGE.parent / (name.replace(".", "/") + ".py")).exists()


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node that can run: all of them but the bodies of ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                yield child
                yield from _runtime_nodes(child)
            continue
        yield node
        yield from _runtime_nodes(node)


def _submodules(package: str) -> set[str]:
    folder = PACKAGE.parent / package.replace(".", "/")
    return {f"{package}.{p.stem}" for p in folder.glob("*.py") if p.stem != "__init__"}


def _is_dynamic_submodule_import(node: ast.AST) -> bool:
    """``importlib.import_module(f"{__name__}.{x}")``: one of the package's own modules, by name."""
    if not (isinstance(node, ast.Call) and ast.unparse(node.func).endswith("import_module")):
        return False
    arg = node.args[0] if node.args else None
    return isinstance(arg, ast.JoinedStr) and ast.unparse(arg).startswith("f'{__name__}.")


def _imports(name: str, path: Path) -> set[str]:
    """The cachedembed modules ``name`` imports, at module level or inside functions.

    A package importing its modules by computed name (``importlib``) imports all of them.
    """
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if _is_dynamic_submodule_import(node):
            found.update(_submodules(package))
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            target = f"{base}.{node.module}" if node.level and node.module else node.module or base
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if _is_module(sub) else target)
    return {m for m in found if m.split(".")[0] == "cachedembed" and _is_module(m)} - {name}


def import_graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(_module_name(p), p) for p in PACKAGE.rglob("*.py")}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path that ends where it starts, or ``None``."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_package_has_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_the_wrapper_layers_import_downwards_only() -> None:
    """Façade -> engine -> keys -> store interface: no lower layer reaches back up."""
    graph = import_graph()
    assert "cachedembed.wrapper" not in graph["cachedembed._engine"]
    assert "cachedembed.wrapper" not in graph["cachedembed.embedder"]
    assert not {"cachedembed.wrapper", "cachedembed._engine"} & graph["cachedembed.keys"]
    assert not {"cachedembed.adapters", "cachedembed.chroma"} & graph["cachedembed.wrapper"]


def test_the_checker_sees_function_local_imports_and_cycles() -> None:
    graph = import_graph()
    # Lazy imports are edges: the batch API is imported inside Cached.submit_batch.
    assert "cachedembed.batchjobs" in graph["cachedembed.wrapper"]
    # So are modules imported by computed name: the adapters package loads its adapters.
    assert "cachedembed.adapters.langchain" in graph["cachedembed.adapters"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
