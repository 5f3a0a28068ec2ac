"""What a runner waits on instead of invoke's sleeps: doorbells a poll can wait
on, polls on descriptors, and which input streams can be polled at all."""

from __future__ import annotations

import os
import select
import stat
import threading
from typing import Any

from .exceptions import descriptor_errors

__all__ = ["Doorbell", "FinishedEvent", "readable", "streaming_fileno"]


class Doorbell:
    """A pipe that a poll can wait on; ringing it is sticky."""

    def __init__(self) -> None:
        with descriptor_errors("a session's wake-up pipe"):
            self.read_fd, self._write_fd = os.pipe()
        self.rung = threading.Event()
        self._lock = threading.Lock()
        self._closed = False

    def ring(self) -> None:
        # Under the lock: after close() the fd numbers may belong to others.
        with self._lock:
            if self.rung.is_set() or self._closed:
                self.rung.set()
                return
            self.rung.set()
            os.write(self._write_fd, b"!")

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            os.close(self.read_fd)
            os.close(self._write_fd)


def readable(fds: list[int]) -> set[int]:
    """Block until some of ``fds`` can be read (or are at their end); those fds.

    poll, not select: descriptor numbers above 1023 are fine.
    """
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    return {fd for fd, _ in poller.poll()}


class FinishedEvent(threading.Event):
    """invoke's ``program_finished`` that also rings a doorbell for the stdin thread."""

    def __init__(self, bell: Doorbell) -> None:
        super().__init__()
        self._bell = bell

    def set(self) -> None:
        super().set()
        self._bell.ring()


def streaming_fileno(stream: Any) -> int | None:
    """The descriptor to wait on for a terminal, pipe or socket; None otherwise.

    Regular files and file-like objects are read through their own ``read``,
    which also returns what the object has already buffered.
    """
    try:
        fd = stream.fileno()
        mode = os.fstat(fd).st_mode
    except (AttributeError, OSError, ValueError):
        return None
    if os.isatty(fd) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        return int(fd)
    return None
