"""Gathered output (``fabmux -P --gather``): each distinct output once, under the hosts
that gave it, as ClusterShell's ``clush -b`` and ``pdsh | dshbak -c`` show it.

While a task runs, each host's lines are kept as the host sent them, instead of
written; when the task has ended on every host, hosts whose output is the same,
byte for byte and stream by stream, are shown once::

    ---------------
    web[01-38,40] (39)
    ---------------
    |  10:01:02 up 3 days, ...

Headings start at the margin; every line of output after ``| ``, so that no host
can print what looks like a heading, its own or another's. A line is shown so
that two different lines never look alike: as every host's output, with what
could act on a terminal or hide in it written as text (``\\e``, ``\\r``,
``\\u200b``: see :func:`~fabric_mux.screen.visible`); and here also a backslash
as ``\\\\`` (a host's ``\\e`` is not an escape byte), spaces other than the plain
space and the tab as escapes (``\\xa0``), and the blanks that end a line
(``ok\\x20``). Standard output's lines go to stdout, standard error's to stderr,
after the block's heading. Hosts that printed nothing are not shown.
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Sequence
from typing import IO

from .hostlist import fold
from .screen import visible

__all__ = ["MARK", "Gathered", "HostOutput", "shown"]

_RULE = "-" * 15
#: What every gathered line of output starts with; no heading does.
MARK = "| "
#: Kept lines: (to stderr, echoed, the line as sent).
_Line = tuple[bool, bool, str]
#: Whitespace that looks like a plain space: no-break and typographic spaces,
#: the ideographic space (after visible(), which took the control characters).
_ODD_SPACE = re.compile(r"[^\S \t]")
_TRAILING_BLANKS = re.compile(r"[ \t]+$")


def _escape(char: str) -> str:
    code = ord(char)
    if char == "\t":
        return "\\t"
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def shown(line: str) -> str:
    """How a gathered line is shown: distinct lines never look alike (see the
    module's notes)."""
    text = visible(line.replace("\\", "\\\\"))
    text = _ODD_SPACE.sub(lambda found: _escape(found.group()), text)
    return _TRAILING_BLANKS.sub(lambda found: "".join(map(_escape, found.group())), text)


class HostOutput:
    """Where one host's output lines go while they are gathered: a stand-in for
    :class:`~fabric_mux.screen.Screen` in that host's line writers."""

    def __init__(self) -> None:
        self.lines: list[_Line] = []
        self._lock = threading.Lock()

    def write_lines(
        self, stream: IO[str], lines: Sequence[str], prefix: str = "", *, echoed: bool = False
    ) -> None:
        """Keep ``lines`` (whole, as the host sent them) from ``stream``."""
        to_stderr = stream is sys.stderr
        with self._lock:
            self.lines.extend((to_stderr, echoed, line) for line in lines)

    def key(self) -> tuple[tuple[_Line, ...], tuple[_Line, ...]]:
        """Its stdout's lines and its stderr's, as sent: what two hosts must share."""
        with self._lock:
            out = tuple(line for line in self.lines if not line[0])
            err = tuple(line for line in self.lines if line[0])
        return out, err


class Gathered:
    """The gathered output of one task over many hosts."""

    def __init__(self) -> None:
        self._hosts: dict[str, HostOutput] = {}
        self._lock = threading.Lock()

    def host(self, host: str) -> HostOutput:
        """Where ``host``'s lines go."""
        with self._lock:
            return self._hosts.setdefault(host, HostOutput())

    def blocks(self) -> list[tuple[list[str], tuple[tuple[_Line, ...], tuple[_Line, ...]]]]:
        """Each distinct output, with its hosts (in the order hosts first gave it)."""
        groups: dict[tuple[tuple[_Line, ...], tuple[_Line, ...]], list[str]] = {}
        with self._lock:
            hosts = list(self._hosts.items())
        for host, output in hosts:
            key = output.key()
            if key != ((), ()):
                groups.setdefault(key, []).append(host)
        return [(names, key) for key, names in groups.items()]

    def show(self, out: IO[str], err: IO[str], order: Sequence[str] = ()) -> None:
        """Write every block: its hosts folded, then its lines. ``order``: the
        run's hosts, to list each block's hosts, and the blocks, in."""
        rank = {host: index for index, host in enumerate(order)}
        blocks = self.blocks()
        for names, _ in blocks:
            names.sort(key=lambda name: rank.get(name, len(rank)))
        # In the run's order of their first hosts: the hosts' threads began in any order.
        blocks.sort(key=lambda block: rank.get(block[0][0], len(rank)))
        for names, (stdout, stderr) in blocks:
            out.write(f"{_RULE}\n{visible(fold(names))} ({len(names)})\n{_RULE}\n")
            out.write(_text(stdout))
            out.flush()
            if stderr:
                err.write(_text(stderr))
                err.flush()


def _text(lines: Sequence[_Line]) -> str:
    # An echoed command is the run's own text (its echo_format's colours too).
    return "".join(f"{MARK}{line if echoed else shown(line)}\n" for _, echoed, line in lines)
