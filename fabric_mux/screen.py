"""Where output of several hosts at once goes: whole lines, each marked with its host.

Parallel runs and ``MuxThreadingGroup`` print many hosts' output on one
terminal: a line is written whole, by one writer at a time, and a progress
line stays at the bottom of a terminal.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from typing import IO, Protocol

__all__ = ["LineSink", "LineWriter", "Screen", "visible"]


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

    def write_lines(
        self, stream: IO[str], lines: Sequence[str], prefix: str = "", *, echoed: bool = False
    ) -> None:
        """Write a host's whole ``lines``, each after ``prefix``, so that no other
        writer's bytes share them. The prefix and the host's lines are shown as
        text (see :func:`visible`): no host can print over its prefix or pass for
        another; an ``echoed`` command is the run's own, written as it is."""
        mark = visible(prefix)
        text = "".join(f"{mark}{line if echoed else visible(line)}\n" for line in lines)
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


#: What would let a host's output move the cursor, clear or recolour what is
#: shown (and so print over another host's prefix): C0 controls but the tab, DEL,
#: and the C1 controls (the 8-bit CSI among them). What would let it change the
#: order in which a terminal that follows Unicode's bidirectional rules shows the
#: rest of its line, so that it reads otherwise than it was sent: the bidi
#: embeddings, overrides, isolates and marks, and the line and paragraph
#: separators. And every other invisible format character (Unicode's category Cf,
#: as of Unicode 15.1: the soft hyphen, zero-width spaces and joiners, the
#: byte-order mark, tags), which would let two different names or lines look alike.
_UNSAFE = re.compile(
    "[\x00-\x08\x0a-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f"
    "\u0890\u0891\u08e2\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064"
    "\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd\U00013430-\U0001343f"
    "\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f]"
)


def _shown(char: re.Match[str]) -> str:
    code = ord(char.group())
    if code > 0xFFFF:
        return f"\\U{code:08x}"
    if code > 0xFF:
        return f"\\u{code:04x}"
    return {0x0D: "\\r", 0x1B: "\\e"}.get(code, f"\\x{code:02x}")


def visible(line: str) -> str:
    """``line`` with every byte that could act on a terminal, or hide in it, shown
    as text (``\\r``, ``\\e``, ``\\x07``, ``\\u202e``), so that what follows a
    host's prefix stays on its line and reads as it was sent."""
    return _UNSAFE.sub(_shown, line)


class LineSink(Protocol):
    """Where a host's whole lines go: the :class:`Screen`, or what gathers them."""

    def write_lines(
        self, stream: IO[str], lines: Sequence[str], prefix: str = "", *, echoed: bool = False
    ) -> None:
        """Take ``lines`` (whole, without their newlines) as the host sent them;
        ``echoed``: the run's own echo of a command (its ``echo_format``), not the
        host's output."""


class LineWriter:
    """Output of one host's stream, handed on a whole line at a time with ``prefix``.

    The unfinished line is kept in pieces, so a line of any length costs time in
    proportion to its length.
    """

    def __init__(self, prefix: str, stream: IO[str], screen: LineSink) -> None:
        self.prefix = prefix
        self.stream = stream
        self.screen = screen
        self._pieces: list[str] = []

    def write(self, text: str) -> None:
        if "\n" not in text:
            if text:
                self._pieces.append(text)
            return
        lines = text.split("\n")
        self._pieces.append(lines[0])
        lines[0] = "".join(self._pieces)
        last = lines.pop()
        self._pieces = [last] if last else []
        self.screen.write_lines(self.stream, [_line(line) for line in lines], self.prefix)

    def close(self) -> None:
        """Hand on what is left of an unfinished last line."""
        if self._pieces:
            self.screen.write_lines(self.stream, [_line("".join(self._pieces))], self.prefix)
            self._pieces = []


def _line(line: str) -> str:
    return line[:-1] if line.endswith("\r") else line  # a pty ends lines with \r\n
