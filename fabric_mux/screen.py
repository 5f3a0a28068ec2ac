"""Where output of several hosts at once goes: whole lines, each marked with its host.

Parallel runs and ``MuxThreadingGroup`` print many hosts' output on one
terminal: a line is written whole, by one writer at a time, and a progress
line stays at the bottom of a terminal.
"""

from __future__ import annotations

import threading
from typing import IO

__all__ = ["LineWriter", "Screen"]


class Screen:
    """Where parallel output goes: whole lines only, one writer at a time, with a
    progress line kept at the bottom of a terminal."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._status = ""
        self._terminal: IO[str] | None = None

    def show_status(self, text: str, stream: IO[str]) -> None:
        """Keep ``text`` as the last line of ``stream``, if it is a terminal."""
        if not _is_terminal(stream):
            return
        with self._lock:
            self._terminal = stream
            self._status = text
            stream.write(f"\r\x1b[K{text}")
            stream.flush()

    def end_status(self) -> None:
        with self._lock:
            if self._terminal is not None and self._status:
                self._terminal.write("\r\x1b[K")
                self._terminal.flush()
            self._status = ""
            self._terminal = None

    def write_lines(self, stream: IO[str], text: str) -> None:
        """Write ``text`` (whole lines) so that no other writer's bytes share its lines."""
        with self._lock:
            status = self._status and self._terminal is not None
            if status:
                self._terminal.write("\r\x1b[K")  # type: ignore[union-attr]
            stream.write(text)
            stream.flush()
            if status:
                self._terminal.write(self._status)  # type: ignore[union-attr]
                self._terminal.flush()  # type: ignore[union-attr]


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class LineWriter:
    """Output of one host's stream, written a whole line at a time with ``prefix``."""

    def __init__(self, prefix: str, stream: IO[str], screen: Screen) -> None:
        self.prefix = prefix
        self.stream = stream
        self.screen = screen
        self._partial = ""

    def write(self, text: str) -> None:
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        if lines:
            self.screen.write_lines(self.stream, "".join(self._line(line) for line in lines))

    def close(self) -> None:
        """Write what is left of an unfinished last line."""
        if self._partial:
            self.screen.write_lines(self.stream, self._line(self._partial))
            self._partial = ""

    def _line(self, line: str) -> str:
        return f"{self.prefix}{line.rstrip(chr(13))}\n"  # a pty ends lines with \r\n
