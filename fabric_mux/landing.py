"""Where a get's bytes land on this machine, and how they take the target's place.

A get into a regular file writes into a file beside its target, renamed over
it once whole and checked: a get that fails leaves the old file as it was,
and no half file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["Landing", "landing_for"]

_CHUNK = 1024 * 1024


class Landing:
    """The descriptor a get into a regular file writes to (:attr:`fd`), and what
    puts it in place; made by :func:`landing_for`."""

    def __init__(self, target: str) -> None:
        #: The file the get is for (links resolved).
        self.target = target
        #: False: the bytes go into the target itself.
        self.replaces = True
        #: Whether what landed can be read back.
        self.readable = True
        folder, name = os.path.split(target)
        while True:
            self._name: str | None = os.path.join(
                folder, f".{name}.{secrets.token_hex(4)}.fabric-mux"
            )
            try:
                # 0666 less the umask, as open() gives a new file (no umask read,
                # which would change it for every thread a moment).
                flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
                self.fd = os.open(self._name, flags, 0o666)
            except FileExistsError:
                continue
            return

    def drop_head(self, head: int, size: int) -> None:
        """Move the ``size`` bytes found after ``head`` others to the start: what the
        login shell printed before the command ran (a copy, in this rare case only)."""
        moved = 0
        while moved < size:
            chunk = os.pread(self.fd, min(_CHUNK, size - moved), head + moved)
            if not chunk:
                break
            view = memoryview(chunk)
            while view:
                written = os.pwrite(self.fd, view, moved)
                view = view[written:]
                moved += written

    def truncate(self, size: int) -> None:
        os.ftruncate(self.fd, size)

    def check_room(self, landed: int) -> None:
        """Say so if a full local disk is why a get ended short: the master only
        stops writing, and the session ends with no word of why."""
        if os.fstatvfs(self.fd).f_bavail != 0:
            return
        raise OSError(
            errno.ENOSPC,
            f"no space left on the local disk for the get ({landed} bytes landed); "
            f"{self.target} is as it was",
            self.target,
        )

    def finish(self, mode: int | None) -> None:
        """Give it ``mode`` (else the old file's; a new file keeps what open() gave
        it) and put it in place."""
        assert self._name is not None
        if mode is None:
            with contextlib.suppress(FileNotFoundError):
                mode = stat.S_IMODE(os.stat(self.target).st_mode)
        if mode is not None:
            os.fchmod(self.fd, mode)
        os.replace(self._name, self.target)
        self._name = None

    def close(self) -> None:
        """Let go of it; a landing file not put in place is gone with it."""
        if self._name is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._name)
            self._name = None
        os.close(self.fd)


@contextmanager
def landing_for(path: str) -> Iterator[Landing | None]:
    """Where a get into ``path`` writes, if it is (or will be) a regular file; else
    None, and the bytes go to ``path`` itself. A symbolic link is followed, as
    open() would; a landing not put in place is removed when the block ends."""
    target = os.path.realpath(path)
    try:
        regular = stat.S_ISREG(os.stat(target).st_mode)
    except FileNotFoundError:
        regular = True
    if not regular:
        yield None
        return
    landing = Landing(target)
    try:
        yield landing
    finally:
        landing.close()
