"""Descriptors one operation owns, each closed exactly once.

Closing a number twice is never harmless in a threaded program: in between,
another thread may have been given that very number for a pipe or socket of
its own, and the second ``close()`` takes it from under that thread (which then
sees EBADF, or worse, reads or writes someone else's stream). So descriptors
are never closed by number "to be safe": whoever made one closes it, once.
"""

from __future__ import annotations

import os
import threading
from types import TracebackType

from .exceptions import descriptor_errors

__all__ = ["Descriptors", "write_all"]


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (``os.write`` may take only part of it)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class Descriptors:
    """The open descriptors of one session or transfer; closes what is left on exit."""

    def __init__(self, what: str) -> None:
        #: What they are for, in the error when none are left.
        self.what = what
        self._open: set[int] = set()
        self._lock = threading.Lock()

    def pipe(self) -> tuple[int, int]:
        with descriptor_errors(self.what):
            read_end, write_end = os.pipe()
        return self._own(read_end), self._own(write_end)

    def open(self, path: str, flags: int, mode: int = 0o666) -> int:
        with descriptor_errors(self.what):
            return self._own(os.open(path, flags | os.O_CLOEXEC, mode))

    def openpty(self) -> tuple[int, int]:
        with descriptor_errors(self.what):
            main, other = os.openpty()
        return self._own(main), self._own(other)

    def owns(self, fd: int | None) -> bool:
        with self._lock:
            return fd in self._open

    def close(self, *fds: int | None) -> None:
        """Close those of ``fds`` still open; the rest (and None) are skipped."""
        for fd in fds:
            with self._lock:
                if fd is None or fd not in self._open:
                    continue
                self._open.discard(fd)
            os.close(fd)

    def close_all(self) -> None:
        with self._lock:
            left, self._open = self._open, set()
        for fd in left:
            os.close(fd)

    def __enter__(self) -> Descriptors:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close_all()

    def _own(self, fd: int) -> int:
        with self._lock:
            self._open.add(fd)
        return fd
