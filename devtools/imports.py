"""The package's own import graph, and the rules its rooms keep.

Every import of one ``fabric_mux`` module by another counts: at the top, under
``TYPE_CHECKING``, or inside a function. A circle among them is reported, as is
a module longer than :data:`MOST_LINES`. ``python3 -m devtools.imports`` prints
both; ``tests/test_imports.py`` fails on either.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

__all__ = ["MOST_LINES", "PACKAGE", "cycles", "import_graph", "long_modules"]

#: The package's folder.
PACKAGE = Path(__file__).resolve().parent.parent / "fabric_mux"
#: The most lines a module of the package may have.
MOST_LINES = 520


def _module_name(path: Path, package: Path) -> str:
    parts = [package.name, *path.relative_to(package).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imported(tree: ast.AST, name: str, is_package: bool, known: set[str]) -> Iterator[str]:
    """The package's modules that the module ``name`` imports anywhere in ``tree``."""
    here = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in known:
                    yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            if source not in known:
                continue
            # ``from . import transfer`` imports a module, not a name of the package.
            submodules = [f"{source}.{alias.name}" for alias in node.names]
            found = [module for module in submodules if module in known]
            if found:
                yield from found
            if len(found) < len(submodules):
                yield source


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Each module of ``package`` and the modules of ``package`` it imports."""
    paths = {_module_name(path, package): path for path in sorted(package.rglob("*.py"))}
    known = set(paths)
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        tree = ast.parse(path.read_text(), str(path))
        is_package = path.name == "__init__.py"
        graph[name] = set(_imported(tree, name, is_package, known)) - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The graph's circles: each strongly connected group of more than one module
    (or a module importing itself), its modules sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1 or node in graph.get(node, ()):
                found.append(sorted(group))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph) + 100))
    try:
        for node in sorted(graph):
            if node not in index:
                visit(node)
    finally:
        sys.setrecursionlimit(limit)
    return sorted(found)


def long_modules(package: Path = PACKAGE, most: int = MOST_LINES) -> dict[str, int]:
    """The modules of ``package`` longer than ``most`` lines, with their lengths."""
    lengths = {
        _module_name(path, package): len(path.read_text().splitlines())
        for path in sorted(package.rglob("*.py"))
    }
    return {name: count for name, count in lengths.items() if count > most}


def main() -> int:
    graph = import_graph()
    circles = cycles(graph)
    for circle in circles:
        print("import circle:", " <-> ".join(circle))
    long = long_modules()
    for name, count in long.items():
        print(f"{name}: {count} lines (at most {MOST_LINES})")
    if not circles and not long:
        print(f"{len(graph)} modules, no import circle, none over {MOST_LINES} lines")
    return 1 if circles or long else 0


if __name__ == "__main__":
    sys.exit(main())
