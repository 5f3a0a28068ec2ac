"""The package's rooms: no import circle among its modules (type-only imports and
imports inside functions count too), and none longer than it takes to read in
one sitting (see devtools.imports)."""

from __future__ import annotations

from pathlib import Path

from devtools.imports import MOST_LINES, PACKAGE, cycles, import_graph, long_modules


def test_no_module_imports_itself_through_others() -> None:
    assert cycles(import_graph()) == []


def test_no_module_is_longer_than_the_limit() -> None:
    assert long_modules() == {}, f"split these (at most {MOST_LINES} lines each)"


def test_every_kind_of_import_is_counted(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("from .a import A\n")
    (package / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import B\nA = 1\n"
    )
    (package / "b.py").write_text("def f():\n    from . import c\n")
    (package / "c.py").write_text("import pkg.a\n")
    graph = import_graph(package)
    assert graph == {
        "pkg": {"pkg.a"},
        "pkg.a": {"pkg.b"},
        "pkg.b": {"pkg.c"},
        "pkg.c": {"pkg.a"},
    }
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]
    assert long_modules(package, most=2) == {"pkg.a": 4}


def test_the_package_is_where_the_check_looks() -> None:
    assert (PACKAGE / "__init__.py").exists()


def test_every_module_is_on_the_module_map() -> None:
    """The docs' map of the rooms names each one (a new room is shown to readers)."""
    shown = (PACKAGE.parent / "docs" / "explanation" / "modules.rst").read_text()
    missing = [
        path.name
        for path in sorted(PACKAGE.glob("*.py"))
        if path.name != "__init__.py" and f"``{path.name}``" not in shown
    ]
    assert missing == []
