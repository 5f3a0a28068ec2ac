"""The site's own Sphinx extension: the reference pages made from the code.

Directives (each parses the reST that :mod:`reftext` makes):

``mux-config``
    the ``mux`` keys: a summary table, then a ``confval`` entry for each.
``mux-environment``
    the ``FABRIC_MUX_*`` variables.
``fabmux-flags``
    the flags ``fabmux`` adds to ``fab``'s.
``fabric-mux-commands``
    ``fabric-mux``'s options and commands.
``mux-exceptions``
    each exception, the stock types it is too, and when it is raised.
``mux-fixtures``
    the pytest fixtures, as ``fixture`` entries (``:fixture:`mux_sshd```).
``mux-report-example``
    a JSON report, made by the code that writes them.

References to Fabric, invoke, paramiko and Python's own library link to their
sites by a fixed rule, with no inventory fetched: the build needs no network.
"""

from __future__ import annotations

import ast
import builtins
import functools
import importlib
import importlib.util
import inspect
import os
import sys
import sysconfig
import types
from typing import Any

import reftext
from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import make_refnode

#: Where each outside package's API pages are, by top-level module.
_SITES = {
    "fabric": "https://docs.fabfile.org/en/latest/api/{page}.html#{name}",
    "invoke": "https://docs.pyinvoke.org/en/stable/api/{page}.html#{name}",
    "paramiko": "https://docs.paramiko.org/en/stable/api/{page}.html#{name}",
}
#: paramiko's pages are not named after its modules.
_PARAMIKO_PAGES = {"sftp_client": "sftp", "channel": "channel", "ssh_exception": "ssh_exception"}
_PYTHON = "https://docs.python.org/3/library/{page}.html#{name}"


class _Generated(SphinxDirective):
    """A directive whose content is the reST a function of :mod:`reftext` makes."""

    has_content = False

    def lines(self) -> list[str]:
        raise NotImplementedError

    def run(self) -> list[nodes.Node]:
        text = "\n".join(self.lines())
        return list(self.parse_text_to_nodes(text, allow_section_headings=True))


class MuxConfig(_Generated):
    def lines(self) -> list[str]:
        return reftext.config_reference()


class MuxEnvironment(_Generated):
    def lines(self) -> list[str]:
        return reftext.environment_reference()


class FabmuxFlags(_Generated):
    def lines(self) -> list[str]:
        return reftext.fabmux_flags()


class FabricMuxCommands(_Generated):
    def lines(self) -> list[str]:
        return reftext.fabric_mux_commands()


class MuxFixtures(_Generated):
    def lines(self) -> list[str]:
        return reftext.fixtures_reference()


class MuxExceptions(_Generated):
    def lines(self) -> list[str]:
        return reftext.exceptions_table()


class MuxReportExample(SphinxDirective):
    has_content = False

    def run(self) -> list[nodes.Node]:
        text = reftext.report_example()
        block = nodes.literal_block(text, text, language="json")
        return [block]


def _canonical(target: str) -> str | None:
    """The qualified name where the object ``target`` names is defined, if it imports."""
    parts = target.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            value: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for part in parts[cut:]:
                value = getattr(value, part)
        except AttributeError:
            return None
        if isinstance(value, types.ModuleType):
            return value.__name__
        module = getattr(value, "__module__", None)
        name = getattr(value, "__qualname__", None)
        if not isinstance(module, str) or not isinstance(name, str):
            return target  # data: named where it is
        return f"{module}.{name}"
    return None


@functools.cache
def _type_checking_names(module: str) -> dict[str, str]:
    """The names a module imports only for its annotations (``if TYPE_CHECKING:``)."""
    try:
        loaded = importlib.import_module(module)
        source = inspect.getsource(loaded)
    except (ImportError, OSError, TypeError):
        return {}
    names: dict[str, str] = {}
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)):
            continue
        for statement in node.body:
            if not isinstance(statement, ast.ImportFrom):
                continue
            base = "." * statement.level + (statement.module or "")
            if statement.level:
                base = importlib.util.resolve_name(base, loaded.__package__)
            for alias in statement.names:
                names[alias.asname or alias.name] = f"{base}.{alias.name}"
    return names


def _named_in(module: str, head: str) -> str | None:
    """What ``head`` names in ``module`` (imported, or imported for annotations only)."""
    try:
        namespace = vars(importlib.import_module(module))
    except ImportError:
        return None
    value = namespace.get(head)
    if value is not None and hasattr(value, "__module__") and hasattr(value, "__qualname__"):
        return f"{value.__module__}.{value.__qualname__}"
    if isinstance(value, types.ModuleType):
        return value.__name__
    return _type_checking_names(module).get(head)


def _qualified(target: str, module: str | None) -> str:
    """``target`` as the module it was written in names it (``Path``: ``pathlib.Path``).

    An annotation that Python could not evaluate (``Config | None`` before 3.10) may
    come with the page's module rather than its own: then a name that the package's
    modules agree on is taken.
    """
    head, rest = target.split(".")[0], target[len(target.split(".")[0]) :]
    if head in ("fabric_mux", "builtins"):
        return target
    found = _named_in(module, head) if module else None
    if found is None:
        ours = [name for name in sys.modules if name.startswith("fabric_mux")]
        meanings = {_named_in(name, head) for name in ours} - {None}
        found = meanings.pop() if len(meanings) == 1 else None
    return found + rest if found else target


@functools.cache
def _stdlib(top: str) -> bool:
    """Whether ``top`` is a module of Python's own library."""
    names = getattr(sys, "stdlib_module_names", None)  # Python 3.10 and later
    if names is not None:
        return top in names
    if top in sys.builtin_module_names:
        return True
    try:
        where = getattr(importlib.import_module(top), "__file__", None) or ""
    except ImportError:
        return False
    library = sysconfig.get_paths()["stdlib"]
    return where.startswith(library + os.sep) and "site-packages" not in where


def _outside_url(target: str) -> str | None:
    """The page of Fabric's, invoke's, paramiko's or Python's docs that documents ``target``."""
    module, _, name = target.rpartition(".")
    if module in ("", "builtins"):
        value = getattr(builtins, name, None)
        if isinstance(value, type) and issubclass(value, BaseException):
            return _PYTHON.format(page="exceptions", name=name)
        return None
    top = module.split(".")[0]
    if _stdlib(top):
        return _PYTHON.format(page=module, name=target)
    if top not in _SITES:
        return None
    page = module.split(".")[1] if "." in module else module
    if top == "paramiko":
        page = _PARAMIKO_PAGES.get(page, page)
    return _SITES[top].format(page=page, name=target)


def _reference(app: Sphinx, env: Any, node: Any, contnode: nodes.Element) -> nodes.Element | None:
    """Resolve what the Python domain could not: a name as its module imports it, a
    name re-exported elsewhere, a name of Fabric, invoke, paramiko or Python's own
    library, a fixture named as a function; an internal name of fabric-mux is shown as
    its name, with no link."""
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"]
    qualified = _qualified(target, node.get("py:module"))
    canonical = _canonical(qualified)
    domain = env.get_domain("py")
    for candidate in dict.fromkeys([qualified, canonical]):
        if candidate and candidate != target and candidate.startswith("fabric_mux"):
            found = domain.resolve_xref(
                env, node["refdoc"], app.builder, node["reftype"], candidate, node, contnode
            )
            if found is not None:
                return found  # type: ignore[no-any-return]
    fixture = env.get_domain("std").objects.get(("fixture", target.rpartition(".")[2]))
    if fixture is not None and (canonical or "").startswith("fabric_mux.pytest_plugin."):
        docname, label = fixture
        return make_refnode(app.builder, node["refdoc"], docname, label, contnode)
    url = _outside_url(canonical or qualified)
    if url is not None:
        reference = nodes.reference("", "", internal=False, refuri=url, reftitle=target)
        reference += contnode
        return reference
    if canonical is not None and canonical.startswith("fabric_mux"):
        return contnode  # internal: named, not documented
    return None


def _public_bases(app: Sphinx, name: str, obj: Any, options: Any, bases: list[type]) -> None:
    """Show a class's bases without the package's private mixins: their own bases
    stand in their place (``EmptyHostList``: ``MuxError``, invoke's ``Exit``)."""
    shown: list[type] = []
    pending = list(bases)
    while pending:
        base = pending.pop(0)
        private = base.__module__.startswith("fabric_mux") and (
            base.__name__.startswith("_") or base.__module__ == "fabric_mux.fabricattrs"
        )
        if private:
            pending[:0] = [b for b in base.__bases__ if b is not object]
        elif base not in shown:
            shown.append(base)
    bases[:] = shown


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("mux-config", MuxConfig)
    app.add_directive("mux-environment", MuxEnvironment)
    app.add_directive("fabmux-flags", FabmuxFlags)
    app.add_directive("fabric-mux-commands", FabricMuxCommands)
    app.add_directive("mux-fixtures", MuxFixtures)
    app.add_directive("mux-exceptions", MuxExceptions)
    app.add_directive("mux-report-example", MuxReportExample)
    app.add_object_type("fixture", "fixture", indextemplate="pair: %s; pytest fixture")
    app.connect("missing-reference", _reference)
    app.connect("autodoc-process-bases", _public_bases)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
