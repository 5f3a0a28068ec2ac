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

import os
import threading
import weakref
from typing import TYPE_CHECKING, Any

from .screen import Screen

if TYPE_CHECKING:
    from .master import Master
    from .session import Session

__all__ = ["ProcessState", "current"]


class ProcessState:
    """Everything this process shares between its connections and threads."""

    def __init__(self) -> None:
        #: The :class:`~fabric_mux.master.Master` of each control path: one object a
        #: master, so that threads share its session slots, its hold and its forwards.
        self.masters: dict[str, Master] = {}
        self.masters_lock = threading.Lock()
        #: ``ssh -G`` answers kept while still true (see :mod:`fabric_mux.resolve`).
        self.resolved: dict[tuple[str, ...], Any] = {}
        self.resolved_lock = threading.Lock()
        #: One question at a time on the user's terminal.
        self.terminal_lock = threading.Lock()
        #: The terminal's settings while a secret is asked without echo (see
        #: :func:`fabric_mux.askpass.restore_terminal`), and whether an exit hook
        #: puts them back.
        self.terminal_saved: list[Any] | None = None
        self.terminal_guarded = False
        #: Where the output of several hosts at once goes (see :mod:`fabric_mux.screen`).
        self.screen = Screen()
        #: Every session not yet closed, for a forked child to let go of.
        self.sessions: weakref.WeakSet[Session] = weakref.WeakSet()
        self._route_locks: dict[str, threading.Lock] = {}
        self._route_locks_guard = threading.Lock()

    def route_lock(self, path: str) -> threading.Lock:
        """The thread lock of one route's lock file (see :func:`fabric_mux.master.route_lock`)."""
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
