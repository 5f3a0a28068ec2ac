"""A transfer's progress: ``progress=`` as a callback, the terminal's bar, and
polls of how far a transfer got that Python does not see."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO

__all__ = ["PROGRESS_INTERVAL", "Progress", "ProgressBar", "polling", "progress_callback"]

Progress = Callable[[int, int], object]

#: How often a progress callback hears about a transfer that bypasses Python.
PROGRESS_INTERVAL = 0.2


@contextmanager
def polling(
    callback: Progress | None,
    total: int | None,
    position: Callable[[], int],
    final: bool = True,
) -> Iterator[None]:
    """Report a transfer that Python does not see, by polling how far it got; with
    ``final``, once more when it ends (else the caller says when it is whole)."""
    if callback is None:
        yield
        return
    done = threading.Event()

    def report() -> None:
        while not done.wait(PROGRESS_INTERVAL):
            try:
                callback(position(), total or 0)
            except OSError:
                return

    thread = threading.Thread(target=report, name="fabric-mux progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
    if final:
        at = position()
        callback(at, total if total is not None else at)


class ProgressBar:
    """A one-line progress report on a terminal: ``name  45%  12.0/100.0 MB  210 MB/s``."""

    def __init__(self, name: str, stream: IO[str] | None = None) -> None:
        self._name = name
        self._stream = stream or sys.stderr
        self._start = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        elapsed = max(time.monotonic() - self._start, 1e-6)
        percent = 100 * done // total if total else 100
        mb = 1024 * 1024
        line = (
            f"\r{self._name}  {percent:3d}%  {done / mb:.1f}/{total / mb:.1f} MB  "
            f"{done / mb / elapsed:.0f} MB/s"
        )
        self._stream.write(line + ("\n" if done >= total else ""))
        self._stream.flush()


def progress_callback(progress: object, name: str) -> Progress | None:
    """``progress=`` as a callback: a callable as is, True for a bar on a terminal."""
    if callable(progress):
        return progress
    if progress is True and sys.stderr.isatty():
        return ProgressBar(name)
    return None
