"""The lock around a master's start: one start of a master at a time, across
the process's threads and every process of the user, bounded in time and ended
by Ctrl-C."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
import time
from collections.abc import Callable, Iterator

from .exceptions import RunInterrupted, StartWaitTimedOut, descriptor_errors
from .process import current

__all__ = ["LOCK_WAIT", "route_lock"]

log = logging.getLogger("fabric_mux")


#: Seconds a start waits for another start of the same master (another
#: thread's or process's, which may be at a password prompt) before giving up.
LOCK_WAIT = 300.0
#: Seconds between looks at a lock that another process holds.
_LOCK_POLL = 0.05


@contextlib.contextmanager
def route_lock(
    lock_path: str, host: str, control_path: str, wait: float | None = None
) -> Iterator[None]:
    """Hold the lock of the master at ``control_path`` across threads (a Lock) and
    processes (flock on ``lock_path``, which names the holder's pid), waiting at
    most ``wait`` seconds (default :data:`LOCK_WAIT`).

    The lock file lives in the private control folder, whatever folder the
    master's socket is in: nobody else can make it first, or hold it. It is
    removed on release; a waiter that then gets the lock of an unlinked file
    sees that its inode is no longer at the path and tries again, so two
    holders can never coexist.

    :raises StartWaitTimedOut: when the other start did not end in time.
    """
    wait = LOCK_WAIT if wait is None else wait
    deadline = time.monotonic() + wait
    thread_lock = current().route_lock(lock_path)
    while not thread_lock.acquire(timeout=_LOCK_POLL):
        _check_stopping(host)
        if time.monotonic() >= deadline:
            raise _still_starting(host, control_path, wait, None)
    try:
        while True:
            flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
            with descriptor_errors("the route's lock"):
                fd = os.open(lock_path, flags, 0o600)
            try:
                said = functools.partial(_say_waiting, host, fd, control_path)
                if not _flock_until(fd, deadline, host, said):
                    raise _still_starting(host, control_path, wait, _holder(fd))
                try:
                    at_path = os.stat(lock_path).st_ino
                except FileNotFoundError:
                    at_path = None
                if at_path == os.fstat(fd).st_ino:
                    break
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock_path)
            os.close(fd)
    finally:
        thread_lock.release()


def _flock_until(fd: int, deadline: float, host: str, waiting: Callable[[], object]) -> bool:
    """Take ``fd``'s flock; False if another process still holds it at ``deadline``.
    ``waiting`` is called once, if it has to wait.

    :raises RunInterrupted: Ctrl-C ended the run's starts meanwhile.
    """
    said = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if not said:
                waiting()
                said = True
            _check_stopping(host)
            if time.monotonic() >= deadline:
                return False
            time.sleep(_LOCK_POLL)


def _say_waiting(host: str, fd: int, control_path: str) -> None:
    log.info(
        "%s: waiting for process %s, which is starting the master at %s",
        host,
        _holder(fd),
        control_path,
    )


def _check_stopping(host: str) -> None:
    """Stop waiting for another start's lock once this process's starts are being
    ended (Ctrl-C: see :meth:`~fabric_mux.process.MasterStarts.cancel`), which
    wait for this one to let go."""
    if current().starts.stopping:
        raise RunInterrupted(
            f"{host}: interrupted (Ctrl-C) while another start of its master held its lock"
        )


def _holder(fd: int) -> int | None:
    """The pid a held lock file names."""
    with contextlib.suppress(OSError, ValueError):
        return int(os.pread(fd, 32, 0).decode().strip())
    return None


def _still_starting(host: str, path: str, wait: float, pid: int | None) -> StartWaitTimedOut:
    who = f"process {pid}" if pid is not None and pid != os.getpid() else "another thread"
    return StartWaitTimedOut(
        f"{host}: waited {wait:.0f} s for {who}, which is starting the master at {path}, "
        "and it has not finished: nothing was started; run again once it has"
    )
