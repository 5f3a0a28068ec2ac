"""Gathered output (``fabmux -P --gather``): each distinct output once, under the hosts
that gave it, as ClusterShell's ``clush -b`` and ``pdsh | dshbak -c`` show it.

While a task runs, each host's lines are kept (shown as text, as every host's
output is: see :func:`~fabric_mux.screen.visible`) instead of written; when the
task has ended on every host, hosts whose output is identical, stream by
stream, are shown once::

    ---------------
    web[01-38,40] (39)
    ---------------
     10:01:02 up 3 days, ...

Standard output's lines go to stdout, standard error's to stderr, after the
block's heading. Hosts that printed nothing are not shown.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence
from typing import IO

from .hostlist import fold
from .screen import visible

__all__ = ["Gathered", "HostOutput"]

_RULE = "-" * 15


class HostOutput:
    """Where one host's output lines go while they are gathered: a stand-in for
    :class:`~fabric_mux.screen.Screen` in that host's line writers."""

    def __init__(self) -> None:
        self.lines: list[tuple[bool, str]] = []
        self._lock = threading.Lock()

    def write_lines(self, stream: IO[str], text: str) -> None:
        """Keep ``text``'s lines (whole, each ending in a newline) from ``stream``."""
        to_stderr = stream is sys.stderr
        with self._lock:
            self.lines.extend((to_stderr, line) for line in text.splitlines(keepends=True))

    def key(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Its stdout's lines and its stderr's: what two hosts must share."""
        with self._lock:
            out = tuple(line for to_stderr, line in self.lines if not to_stderr)
            err = tuple(line for to_stderr, line in self.lines if to_stderr)
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

    def blocks(self) -> list[tuple[list[str], tuple[tuple[str, ...], tuple[str, ...]]]]:
        """Each distinct output, with its hosts (in the order hosts first gave it)."""
        groups: dict[tuple[tuple[str, ...], tuple[str, ...]], list[str]] = {}
        with self._lock:
            hosts = list(self._hosts.items())
        for host, output in hosts:
            key = output.key()
            if key != ((), ()):
                groups.setdefault(key, []).append(host)
        return [(names, key) for key, names in groups.items()]

    def show(self, out: IO[str], err: IO[str], order: Sequence[str] = ()) -> None:
        """Write every block: its hosts folded, then its lines. ``order``: the
        run's hosts, to list each block's hosts in."""
        rank = {host: index for index, host in enumerate(order)}
        for names, (stdout, stderr) in self.blocks():
            names.sort(key=lambda name: rank.get(name, len(rank)))
            out.write(f"{_RULE}\n{visible(fold(names))} ({len(names)})\n{_RULE}\n")
            out.write("".join(stdout))
            out.flush()
            if stderr:
                err.write("".join(stderr))
                err.flush()
