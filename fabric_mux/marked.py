"""A get's bytes, told apart from what the account's login shell prints.

A login shell may print to the same stdout as the get's command: before it runs
(a ``.bashrc`` that echoes), after it ends (a ``trap ... EXIT``), or at any time
in between (a job it left in the background). The get's command prints a random
marker between NULs, which nothing else can have printed: no command line holds
a NUL, and the token is new each get.

Into a file (:func:`file_bytes`), the marker comes after the file's bytes. The
bytes before it number exactly the size that ``ls`` reported when nothing was
printed before it: then they are the file's, at once, without reading them.
When more came, what the login shell printed is either all before the file
(taken off the head, in a copy) or somewhere inside it; the copy's POSIX
``cksum`` against the remote's says which, and a get with bytes that are not
the file's fails. What comes after the marker is never the file's.

Pumped through Python (:class:`Between`), the marker comes before the bytes
and again after them: only what lies between reaches the sink, and the count
of it, held against the size, fails a get that something printed into.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable

__all__ = ["Between", "Cksum", "find", "marker", "move_to_start"]

_CHUNK = 1024 * 1024


def marker(token: str) -> bytes:
    """What the remote command prints for ``token``."""
    return b"\0" + token.encode("ascii") + b"\0"


def find(fd: int, mark: bytes, start: int, end: int) -> int:
    """Where ``mark`` first begins in bytes ``start`` to ``end`` of the file at
    ``fd``; -1 if nowhere. Reads just ``mark``'s length when it is at ``start``."""
    if os.pread(fd, len(mark), start) == mark:
        return start
    at = start
    while at + len(mark) <= end:
        chunk = os.pread(fd, min(_CHUNK, end - at), at)
        found = chunk.find(mark)
        if found >= 0:
            return at + found
        if len(chunk) < len(mark):
            break
        at += len(chunk) - len(mark) + 1  # a mark may straddle two chunks
    return -1


def move_to_start(fd: int, head: int, size: int) -> int:
    """Move the ``size`` bytes after the first ``head`` to the start of the file
    at ``fd``; the POSIX ``cksum`` of what was moved."""
    crc = Cksum()
    moved = 0
    while moved < size:
        chunk = os.pread(fd, min(_CHUNK, size - moved), head + moved)
        if not chunk:
            break
        crc.update(chunk)
        view = memoryview(chunk)
        while view:
            written = os.pwrite(fd, view, moved)
            view = view[written:]
            moved += written
    return crc.value()


# cksum's CRC reads each byte from its high bit; zlib's from its low bit. Bytes
# with their bits reversed, through zlib's fast CRC, give cksum's, reversed.
_REVERSED = bytes(int(f"{byte:08b}"[::-1], 2) for byte in range(256))


class Cksum:
    """POSIX ``cksum`` (the CRC, with the length appended), fed in pieces."""

    def __init__(self) -> None:
        self._crc = 0xFFFFFFFF  # zlib starts from this, inverted: a register of 0
        self._length = 0

    def update(self, data: bytes) -> None:
        self._crc = zlib.crc32(data.translate(_REVERSED), self._crc)
        self._length += len(data)

    def value(self) -> int:
        length, tail = self._length, bytearray()
        while length:
            tail.append(length & 0xFF)
            length >>= 8
        register = zlib.crc32(bytes(tail).translate(_REVERSED), self._crc) ^ 0xFFFFFFFF
        return int(f"{register:032b}"[::-1], 2) ^ 0xFFFFFFFF


class Between:
    """A sink that passes on to ``sink`` only what comes between the first
    ``mark`` and the next: the file's bytes, without what the login shell
    printed before, after or (the count then tells) among them."""

    def __init__(self, mark: bytes, sink: Callable[[bytes], object]) -> None:
        self.mark = mark
        self.sink = sink
        self._held = b""  # what may begin a mark, held until the next bytes say
        self._started = False
        #: Whether the second mark came: all that was sent has been passed on.
        self.ended = False
        #: Bytes passed on.
        self.passed = 0

    def write(self, chunk: bytes) -> None:
        if self.ended:
            return
        held = self._held + chunk
        at = held.find(self.mark)
        if not self._started:
            if at < 0:
                # Only the end could begin the mark; what is before it is dropped.
                self._held = held[-(len(self.mark) - 1) :]
                return
            self._started = True
            held = held[at + len(self.mark) :]
            at = held.find(self.mark)
        if at >= 0:
            self.ended = True
            self._held = b""
            self._pass(held[:at])
            return
        keep = len(self.mark) - 1
        self._held = held[-keep:] if len(held) > keep else held
        self._pass(held[: len(held) - len(self._held)])

    def _pass(self, data: bytes) -> None:
        if data:
            self.sink(data)
            self.passed += len(data)
