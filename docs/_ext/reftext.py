"""The reference pages' generated parts, as reST text made from the code.

Nothing here imports Sphinx: the tests read the same text the site shows
(``tests/test_config.py``). :mod:`muxdocs` parses it into the pages.
"""

from __future__ import annotations

import argparse
import inspect
import json
import re
import textwrap
from collections.abc import Iterator
from typing import Any

#: The reST characters that would start markup in plain help text.
_MARKUP = re.compile(r"([\\`*|])")


def plain(text: str) -> str:
    """Help text of a command line, shown as the words it is (no reST markup),
    as a sentence: argparse's start in lower case."""
    text = " ".join(text.split())
    return _MARKUP.sub(r"\\\1", text[:1].upper() + text[1:])


def yaml_value(value: Any) -> str:
    """A default as ``fabric.yaml`` writes it."""
    return json.dumps(value) if not isinstance(value, str) else value


def _flags_by_key() -> dict[str, list[str]]:
    """The ``fabmux`` flags that set each ``mux`` key, as :rst:role:`option` targets."""
    from fabric_mux.main import SWITCHES, VALUE_FLAGS

    flags: dict[str, list[str]] = {}
    for name, (key, value) in SWITCHES.items():
        flags.setdefault(key, []).append(f":option:`fabmux --{name}` (``{yaml_value(value)}``)")
    for name, flag in VALUE_FLAGS.items():
        flags.setdefault(flag.key, []).append(f":option:`fabmux --{name}`")
    return flags


def config_reference() -> list[str]:
    """A summary table of every ``mux`` key, then an entry for each:
    what it takes, its default, its variable, its flag and what it does."""
    from fabric_mux.config import KEYS

    flags = _flags_by_key()
    lines = [
        ".. list-table::",
        "   :header-rows: 1",
        "   :widths: auto",
        "   :class: mux-keys",
        "",
        "   * - key",
        "     - takes",
        "     - default",
        "     - environment variable",
    ]
    for key in KEYS:
        lines += [
            f"   * - :confval:`mux.{key.name}`",
            f"     - {key.takes}",
            f"     - ``{yaml_value(key.default)}``",
            f"     - ``{key.variable}``",
        ]
    lines.append("")
    for key in KEYS:
        lines += [f".. confval:: mux.{key.name}", ""]
        lines += [
            f"   :Takes: {key.takes}",
            f"   :Default: ``{yaml_value(key.default)}``",
            f"   :Environment: ``{key.variable}``",
        ]
        if key.name in flags:
            lines.append(f"   :Flag: {', '.join(flags[key.name])}")
        meaning = textwrap.wrap(key.meaning, 88, initial_indent="   ", subsequent_indent="   ")
        lines += ["", *meaning]
        lines.append("")
    return lines


def environment_reference() -> list[str]:
    """A table of the ``FABRIC_MUX_*`` variables, each with its key and what it takes."""
    from fabric_mux.config import KEYS

    lines = [
        ".. list-table::",
        "   :header-rows: 1",
        "   :widths: auto",
        "",
        "   * - variable",
        "     - sets",
        "     - takes",
    ]
    for key in KEYS:
        lines += [
            f"   * - ``{key.variable}``",
            f"     - :confval:`mux.{key.name}`",
            f"     - {key.takes}",
        ]
    lines.append("")
    return lines


def _fabmux_arguments() -> list[Any]:
    """The flags ``fabmux`` adds to ``fab``'s, in its order."""
    from fabric.main import Fab

    from fabric_mux.main import program

    stock = {name for argument in Fab.core_args(program) for name in argument.names}
    return [argument for argument in program.core_args() if not set(argument.names) & stock]


def fabmux_flags() -> list[str]:
    """An :rst:dir:`option` entry for each flag ``fabmux`` adds, with the key it sets."""
    from fabric_mux.main import SWITCHES, VALUE_FLAGS

    lines = [".. program:: fabmux", ""]
    for argument in _fabmux_arguments():
        long = next(name for name in argument.names if len(name) > 1)
        value = VALUE_FLAGS.get(long)
        spellings = sorted(argument.names, key=len)
        shown = [f"-{name}" if len(name) == 1 else f"--{name}" for name in spellings]
        if value is not None:
            shown = [f"{flag} {value.value}" for flag in shown]
        lines += [f".. option:: {', '.join(shown)}", "", f"   {plain(argument.help)}", ""]
        if value is not None:
            lines.append(f"   Sets :confval:`mux.{value.key}`, read as it is in ``fabric.yaml``.")
        elif long in SWITCHES:
            key, switched = SWITCHES[long]
            lines.append(f"   Sets :confval:`mux.{key}` to ``{yaml_value(switched)}``.")
        lines.append("")
    return lines


def _option(action: argparse.Action) -> str:
    """An option's spellings with its value's name: ``-F FILE, --ssh-config FILE``."""
    name = action.metavar if isinstance(action.metavar, str) else action.dest.upper()
    value = "" if action.nargs == 0 else f" {name}"
    return ", ".join(f"{string}{value}" for string in action.option_strings)


def _subcommands(parser: argparse.ArgumentParser) -> Iterator[tuple[str, str, Any]]:
    """(name, help, parser) of each subcommand, in order."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            for name, sub in action.choices.items():
                yield name, helps.get(name, ""), sub


def fabric_mux_commands() -> list[str]:
    """``fabric-mux``'s options, then a section for each of its commands: what it
    does, its usage, its own options."""
    from fabric_mux.cli import parser as cli_parser

    parser = cli_parser(default_dir="$XDG_RUNTIME_DIR/fabric-mux, else ~/.ssh/fabric-mux")
    common = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    title = "Options of every command"
    lines = [title, "-" * len(title), "", ".. program:: fabric-mux", ""]
    for action in common:
        lines += [f".. option:: {_option(action)}", "", f"   {plain(action.help or '')}", ""]
    for name, help_text, sub in _subcommands(parser):
        title = f"fabric-mux {name}"
        lines += [title, "-" * len(title), "", plain(help_text), ""]
        usage = " ".join(sub.format_usage().split()).removeprefix("usage: ")
        lines += ["::", "", f"   {usage}", "", f".. program:: fabric-mux {name}", ""]
        own = [
            a
            for a in sub._actions
            if a.option_strings and a.dest != "help" and a.dest not in {c.dest for c in common}
        ]
        for action in own:
            lines += [f".. option:: {_option(action)}", "", f"   {plain(action.help or '')}", ""]
    return lines


#: ``:func:`NAME``` in a fixture's docstring, where NAME is a fixture.
_FIXTURE_REF = re.compile(r":func:`(mux_\w+)`")


def _is_fixture(value: Any) -> bool:
    return hasattr(value, "_get_wrapped_function") or hasattr(value, "_pytestfixturefunction")


def _fixture_scope(value: Any) -> str:
    marker = getattr(value, "_fixture_function_marker", None) or getattr(
        value, "_pytestfixturefunction", None
    )
    return str(getattr(marker, "scope", "function"))


def _fixture_function(value: Any) -> Any:
    unwrap = getattr(value, "_get_wrapped_function", None)
    return unwrap() if unwrap is not None else value


def fixtures_reference() -> list[str]:
    """A :rst:dir:`fixture` entry for each fixture the pytest plugin gives, in
    its order: scope, the fixtures it uses, its docstring."""
    from fabric_mux import pytest_plugin

    lines = [".. py:currentmodule:: fabric_mux.pytest_plugin", ""]
    for name in pytest_plugin.__all__:
        value = getattr(pytest_plugin, name)
        if not _is_fixture(value):
            continue
        function = _fixture_function(value)
        uses = [
            f":fixture:`{used}`"
            for used in inspect.signature(function).parameters
            if used in pytest_plugin.__all__
        ]
        doc = _FIXTURE_REF.sub(r":fixture:`\1`", inspect.getdoc(function) or "")
        lines += [f".. fixture:: {name}", "", f"   :Scope: {_fixture_scope(value)}"]
        if uses:
            lines.append(f"   :Uses: {', '.join(uses)}")
        lines += ["", *textwrap.indent(doc, "   ").splitlines(), ""]
    return lines


def report_example() -> str:
    """A report as ``--report`` writes it, of a made-up rolling run over four hosts
    whose second batch spent the failure budget."""
    from fabric_mux.parallel import HostReport
    from fabric_mux.runreport import RunRecord, report_data

    start = 1767261600.0  # 2026-01-01 10:00:00 UTC
    record = RunRecord(
        command=["fabmux", "--serial", "1,2", "-H", "web[1-4]", "deploy", "restart"],
        started=start,
        ended=start + 12.5,
        tasks=["deploy", "restart"],
        serial=["1", "2"],
        batches=[1, 2, 1],
        max_fail="0",
        stopped="the run stopped: 1 of 3 hosts started failed, more than its failure "
        "budget (0 hosts)",
    )
    hosts = [
        HostReport("web1", seconds=6.214, batch=1),
        HostReport(
            "web2",
            seconds=2.901,
            batch=2,
            failed_in="deploy",
            why="UnexpectedExit: './migrate' exited with 2",
            exit_code=2,
            stderr_tail="migrate: table users is locked\n",
            skipped=["restart"],
        ),
        HostReport("web3", seconds=3.05, batch=2, stopped=["restart"]),
        HostReport("web4"),
    ]
    return json.dumps(report_data(record, hosts), indent=2)


def report_fields() -> set[str]:
    """Every field name a report has (``hosts.status``: a host's)."""
    data = json.loads(report_example())
    fields = {name for name in data if name not in ("counts", "hosts")}
    fields |= {f"counts.{name}" for name in data["counts"]}
    fields |= {f"hosts.{name}" for name in data["hosts"][0]}
    return fields


def _stock_bases(cls: type) -> list[type]:
    """The classes outside fabric-mux that ``cls`` is, nearest first (not ``Exception``)."""
    found: list[type] = []
    for base in cls.__mro__[1:]:
        if base.__module__.startswith("fabric_mux") or base in (Exception, BaseException, object):
            continue
        if not any(issubclass(seen, base) for seen in found):
            found.append(base)
    return found


def _class_name(cls: type) -> str:
    module = "" if cls.__module__ == "builtins" else f"{cls.__module__}."
    return f":class:`~{module}{cls.__qualname__}`"


def exceptions_table() -> list[str]:
    """Each exception: what stock type it is too, and the first line of its docstring."""
    from fabric_mux import exceptions

    lines = [
        ".. list-table::",
        "   :header-rows: 1",
        "   :widths: 27 22 51",
        "   :class: mux-exceptions",
        "",
        "   * - exception",
        "     - also a",
        "     - raised when",
    ]
    for name in exceptions.__all__:
        cls = getattr(exceptions, name)
        if not isinstance(cls, type):
            continue
        doc = (inspect.getdoc(cls) or "").split("\n\n")[0]
        also = ", ".join(_class_name(base) for base in _stock_bases(cls)) or "\\-"
        lines += [
            f"   * - :exc:`~fabric_mux.exceptions.{name}`",
            f"     - {also}",
            f"     - {' '.join(doc.split())}",
        ]
    lines.append("")
    return lines
