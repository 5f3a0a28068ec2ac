"""The next batch's masters, started while this one works (a rolling run).

Each host's master starts in a thread of its own, in the run's start slots
(:class:`~fabric_mux.warmup.Starter`); a failure is the host's own, kept for its
task to raise. Should the run stop before those hosts run anything (a spent
failure budget, Ctrl-C), :meth:`StartedAhead.stop` ends the starts under way
and refuses new ones until their threads end (a thread past its slot, not yet
logging in, would log in after all), then stops the masters they made; one
that comes up after the run gave up waiting for it is stopped as it comes.
Masters found up, and the user's own, are never stopped.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .exceptions import MuxError
from .warmup import UNWIND_SECONDS, Starter, starts_refused

if TYPE_CHECKING:
    from .connection import MuxConnection
    from .master import Master

__all__ = ["StartedAhead"]


class StartedAhead:
    """The masters of ``hosts`` (each a connection and the key its failure is
    kept under in ``failures``), starting from the moment this is made."""

    def __init__(
        self,
        starter: Starter,
        hosts: Sequence[tuple[MuxConnection, str]],
        failures: dict[str, BaseException],
    ) -> None:
        self._starter = starter
        self._failures = failures
        self._started: list[Master] = []
        self._stopped = False
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._start, args=host, name="fabric-mux ahead", daemon=True)
            for host in hosts
        ]
        for thread in self._threads:
            thread.start()

    def _start(self, connection: MuxConnection, key: str) -> None:
        try:
            was_up = connection.route().master().alive() is not None
            self._starter.open(connection)
        except Exception as exc:  # the host's own: its task raises it, no new login
            self._failures[key] = exc
            return
        if was_up:
            return
        with self._lock:
            if not self._stopped:
                self._started.append(connection.mux_master)
                return
        _stop_unused(connection.mux_master)  # it came up after the run stopped

    def stop(self) -> None:
        """The run stopped: these hosts will never run. Starts still under way (a
        ProxyCommand that hangs, a password prompt) are ended, not waited for."""
        with self._lock:
            self._stopped = True
        with starts_refused(self._starter):
            deadline = time.monotonic() + UNWIND_SECONDS
            for thread in self._threads:
                thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            masters = list(self._started)
        for master in masters:
            _stop_unused(master)


def _stop_unused(master: Master) -> None:
    if not master.users:
        with contextlib.suppress(MuxError, OSError):
            master.stop()
