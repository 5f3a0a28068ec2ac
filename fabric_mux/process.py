"""What this process holds across its connections, in one place, made anew in a forked child.

A forked child inherits the parent's objects but not its threads: a lock that
another thread held at the fork would stay held in the child for ever, and the
parent's sessions and holds on masters are not the child's to use or to end.
So every piece of process-wide state lives in one :class:`ProcessState`, and
one fork hook gives the child a fresh one (letting go of the descriptors of
the parent's sessions without ending them). The masters themselves are shared
by every process, as ever: the child finds them again by their sockets.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from .screen import Screen

if TYPE_CHECKING:
    import subprocess

__all__ = ["Forgettable", "MasterStarts", "ProcessState", "Registry", "current"]

T = TypeVar("T")


class Forgettable(Protocol):
    """What a forked child does with an object of its parent's: lets go of it
    without ending it (a :class:`~fabric_mux.session.Session`'s descriptors)."""

    def forget(self) -> None: ...


class Registry(Generic[T]):
    """One object a key, made on first ask, shared by the process's threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._objects: dict[str, T] = {}

    def get(self, key: str, make: Callable[[], T]) -> T:
        """The object of ``key``; ``make()`` makes it (under the lock) when there is none."""
        with self._lock:
            found = self._objects.get(key)
            if found is None:
                found = self._objects[key] = make()
            return found


class MasterStarts:
    """The masters this process is starting now, so that Ctrl-C can end them.

    A master's ``ssh -M -N -f`` runs in a session of its own (the user's
    Ctrl-C must not reach a running master), so an interrupted run ends the
    starts itself: :meth:`cancel` kills each ``ssh`` still logging in (its
    process group: a ProxyCommand too), makes a start that finishes anyway
    stop the master it made, and refuses new starts until :meth:`resume`.
    """

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._running: dict[int, subprocess.Popen[bytes]] = {}
        self._cancelled: set[int] = set()
        #: Starts between taking a route's lock and letting it go.
        self._busy = 0
        self.stopping = False

    def begin(self, proc: subprocess.Popen[bytes]) -> None:
        """``proc`` (just spawned) logs a master in; killed by :meth:`cancel`."""
        with self._lock:
            self._running[proc.pid] = proc
            if not self.stopping:
                return
        self.kill_login(proc)
        with self._lock:
            self._cancelled.add(proc.pid)

    def end(self, proc: subprocess.Popen[bytes]) -> bool:
        """``proc`` has ended; False if the start was cancelled meanwhile."""
        with self._lock:
            self._running.pop(proc.pid, None)
            if proc.pid in self._cancelled:
                self._cancelled.discard(proc.pid)
                return False
            return not self.stopping

    def cancel(self) -> None:
        """End every start under way, and refuse new ones until :meth:`resume`."""
        with self._lock:
            self.stopping = True
            running = list(self._running.values())
            self._cancelled.update(self._running)
        for proc in running:
            self.kill_login(proc)

    def resume(self) -> None:
        with self._lock:
            self.stopping = False

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        """Counts a start (its lock, its ``ssh``, its clean-up) for :meth:`wait_idle`."""
        with self._lock:
            self._busy += 1
        try:
            yield
        finally:
            with self._lock:
                self._busy -= 1
                self._lock.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no start is under way (their locks let go); False at ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(left)
            return True

    @staticmethod
    def kill_login(proc: subprocess.Popen[bytes]) -> None:
        """Kill ``proc``, an ``ssh`` still logging in, with what it started."""
        # Its own session's group: the ssh and the ProxyCommand it runs. A master
        # that already went to the background is in a session of its own; the
        # start that made it stops it (see end()).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


class ProcessState:
    """Everything this process shares between its connections and threads."""

    def __init__(self) -> None:
        #: One :class:`Registry` a kind of object (see :meth:`registry`).
        self._registries: dict[type[Any], Registry[Any]] = {}
        self._registries_guard = threading.Lock()
        #: ``ssh -G`` answers kept while still true (see :mod:`fabric_mux.resolve`).
        self.resolved: dict[tuple[str, ...], Any] = {}
        self.resolved_lock = threading.Lock()
        #: Each ssh program's version (see :mod:`fabric_mux.version`).
        self.ssh_versions: dict[str, Any] = {}
        self.ssh_versions_lock = threading.Lock()
        #: One question at a time on the user's terminal.
        self.terminal_lock = threading.Lock()
        #: The terminal's settings while a secret is asked without echo (see
        #: :func:`fabric_mux.terminal.restore_terminal`), and whether an exit hook
        #: puts them back.
        self.terminal_saved: list[Any] | None = None
        self.terminal_guarded = False
        #: Where the output of several hosts at once goes (see :mod:`fabric_mux.screen`).
        self.screen = Screen()
        #: Every session not yet closed, for a forked child to let go of.
        self.sessions: weakref.WeakSet[Forgettable] = weakref.WeakSet()
        #: Masters being started now (see :class:`MasterStarts`).
        self.starts = MasterStarts()
        #: (host, control path) pairs whose refused master was warned of already.
        self.said: set[tuple[str, str]] = set()
        self._route_locks: dict[str, threading.Lock] = {}
        self._route_locks_guard = threading.Lock()

    def registry(self, kind: type[T]) -> Registry[T]:
        """This process's objects of ``kind``, one a key: the
        :class:`~fabric_mux.master.Master` of each control path, say, so that
        threads share its session slots, its hold and its forwards."""
        with self._registries_guard:
            return self._registries.setdefault(kind, Registry())

    def route_lock(self, path: str) -> threading.Lock:
        """The thread lock of one route's lock file (see
        :func:`fabric_mux.startlock.route_lock`)."""
        with self._route_locks_guard:
            return self._route_locks.setdefault(path, threading.Lock())


_current = ProcessState()


def current() -> ProcessState:
    """This process's state (a forked child's own, once it has forked)."""
    return _current


def _after_fork_in_child() -> None:
    global _current
    parent, _current = _current, ProcessState()
    for session in list(parent.sessions):
        session.forget()


os.register_at_fork(after_in_child=_after_fork_in_child)
