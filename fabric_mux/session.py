"""A session: one command or subsystem running on a master, and everything it holds.

A :class:`Session` owns its control connection (closing it ends the session)
and its place among the master's session slots. It gives both back when it is
closed, when it is garbage-collected, and, for a session nobody waits on, when
the remote side has ended; in a forked child it lets go of its descriptor
without touching the parent's session.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from .exceptions import MasterNotResponding, MasterUnavailable, RequestDenied, SessionRefused
from .process import current

if TYPE_CHECKING:
    from .master import Master
    from .protocol import MuxClient
    from .screen import LineSink
    from .slots import Slot

__all__ = ["Session", "SessionHost", "SessionOpener", "open_session"]

log = logging.getLogger("fabric_mux")

#: Seconds to wait before each retry of a refused session (about 2 s in all).
REFUSAL_BACKOFF = (0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.5, 0.5, 0.5)


class SessionOpener(Protocol):
    """What the transfer code needs from a connection."""

    original_host: str

    def open_session(self, command: str, fds: Sequence[int], **flags: Any) -> Session: ...


class SessionHost(SessionOpener, Protocol):
    """What a runner needs from a connection: sessions, and what to say about them."""

    config: Any

    @property
    def output_prefix(self) -> str | None: ...

    @property
    def output_sink(self) -> LineSink | None: ...

    @property
    def master_pid(self) -> int | None: ...

    @property
    def master_forwards_agent(self) -> bool: ...

    def check_env_sent(self, names: Sequence[str]) -> None: ...

    def disown_session(self, session: Session) -> None: ...


def _end(client: MuxClient, slot: Slot, owner: int) -> None:
    if os.getpid() != owner:
        client.forget()  # a forked child's copy: the session is the parent's
        return
    client.close()
    slot.release()


class Session:
    """One session on ``master``; see the module's rules. A context manager."""

    def __init__(self, client: MuxClient, slot: Slot, master: Master) -> None:
        self._client = client
        self._slot = slot
        self._master = master
        self._ending = weakref.finalize(self, _end, client, slot, os.getpid())
        self._exit_lock = threading.Lock()
        self._exit_read = False
        self._exit_status: int | None = None
        current().sessions.add(self)  # a forked child lets go of it

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"id {self._client.session_id}"
        return f"<Session {self._master.host} {state}>"

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return not self._ending.alive

    @property
    def tty_alloc_failed(self) -> bool:
        """The server gave no pty where one was asked for."""
        return self._client.tty_alloc_failed

    def fileno(self) -> int:
        """The control connection: readable when the exit status (or the end) comes."""
        return self._client.fileno()

    def wait_exit(self) -> int | None:
        """Block until the session ends: its exit status, or None if none came.

        None means the session ended with no exit message: the remote process
        was killed by a signal, the master lost its connection, or the session
        was closed or woken. Later calls return the same.
        """
        with self._exit_lock:
            if not self._exit_read:
                self._exit_status = None if self.closed else self._client.wait_exit()
                self._exit_read = True
            return self._exit_status

    def free_slot_at_exit(self, then: Callable[[], None] | None = None) -> None:
        """Give the slot back as soon as the remote side ends, whoever waits for it;
        then call ``then``.

        For sessions that may never be waited on (an unjoined ``asynchronous``
        run): their slot comes back when the command ends.
        """

        def watch() -> None:
            self.wait_exit()
            self._slot.release()
            if then is not None:
                then()

        threading.Thread(target=watch, name=f"fabric-mux exit {self}", daemon=True).start()

    def wake(self) -> None:
        """Make a waiting :meth:`wait_exit` return now (a timeout); the session ends."""
        self._client.shutdown()

    def disown(self) -> None:
        """Let the session run on unattended: its slot is given back now; it ends
        when :meth:`close` is called (its connection closes) or the process ends."""
        self._slot.release()

    def close(self) -> None:
        """End the session and give its slot back; later calls do nothing."""
        self._ending()

    def forget(self) -> None:
        """In a forked child: drop the inherited descriptor, leave the parent's session be."""
        self._ending.detach()
        self._client.forget()

    def master_alive(self) -> bool:
        """Whether the master is still there (a session that ended with no exit status
        lost either its remote process or its master: only the master can tell)."""
        return self._master.alive() is not None


def open_session(
    master: Master,
    command: str,
    fds: Sequence[int],
    flags: dict[str, Any],
    *,
    host: str,
    revive: Callable[[], Master],
) -> Session:
    """Open a session on ``master``, waiting for one of its slots.

    The wait for a slot is bounded by the master's reply timeout. A dead or
    stale master is brought back with ``revive``, which returns the master to
    use from then on (another one when the route's rule says so: the user's
    master gone, ours in its place), and the open retried. A refusal by the
    server lowers the slots to what it allows and is retried with backoff:
    sshd also frees a closed session a moment after our side sees it end.
    """
    slot = _slot(master, host)
    try:
        for delay in (*REFUSAL_BACKOFF, None):
            try:
                client = master.client()
            except MasterUnavailable:
                # Gone (killed, or its persist time ran out): start anew.
                if delay is None:
                    raise
                master, slot = _revived(master, slot, revive, host)
                continue
            except MasterNotResponding:
                raise _why_no_answer(master, host) from None
            try:
                client.open_session(command, fds, **flags)
            except MasterUnavailable:
                # It went away between our connect and its answer (exiting,
                # or its server stopped answering): start anew and try again.
                client.close()
                if delay is None:
                    raise
                master, slot = _revived(master, slot, revive, host)
                continue
            except RequestDenied as exc:
                client.close()
                if delay is None or not master.sessions.refused(slot, master.reply_timeout):
                    raise SessionRefused(host, exc.reason) from None
                time.sleep(delay)
                continue
            except MasterNotResponding:
                client.close()
                raise _why_no_answer(master, host) from None
            except BaseException:
                client.close()
                raise
            master.sessions.opened()
            return Session(client, slot, master)
    except BaseException:
        slot.release()
        raise
    raise AssertionError("unreachable")


def _slot(master: Master, host: str) -> Slot:
    """One of ``master``'s session slots, waiting at most its reply timeout."""
    timeout = master.reply_timeout
    slot = master.sessions.take(timeout)
    if slot is None:
        raise SessionRefused(
            host,
            f"no session slot came free in {timeout} s "
            f"({master.sessions.used} of {master.sessions.limit} in use)",
        )
    return slot


def _revived(
    master: Master, slot: Slot, revive: Callable[[], Master], host: str
) -> tuple[Master, Slot]:
    """The master to use once ``revive`` has brought the route back, and a slot of it."""
    revived = revive()
    if revived is master:
        return master, slot
    slot.release()
    return revived, _slot(revived, host)


def _why_no_answer(master: Master, host: str) -> MasterNotResponding:
    """Which of the two did not answer a session request: the master, or its server."""
    timeout = master.reply_timeout
    try:
        pid = master.alive(timeout=min(5.0, timeout or 5.0))
    except MasterNotResponding as exc:
        error = MasterNotResponding(
            f"{exc.message}; it may be stopped or hung, and it is left as it is "
            "(no second master is started for the route)"
        )
        error.pid = exc.pid
        return error
    return MasterNotResponding(
        f"{host}: the master (pid {pid}) answers, but the server behind it did not open "
        f"a session within {timeout:g} s; if the link is dead, the master's keep-alives "
        "(mux.server_alive_interval) end it"
    )
