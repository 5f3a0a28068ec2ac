"""Start many masters at once: a cold run over many hosts pays for about one
login's time, not one per host in turn.

How many start at once follows the work, unless the user set
``mux.masters_at_once``:

- a master that is up costs no start and waits for nothing;
- at most :data:`FIRST_STARTS` logins at first, and one more for every login
  that completes (more logins keep completing: the link and the CPU can
  take more), up to what this process's descriptors allow; a start that
  timed out or was refused or reset (too many at once) halves it;
- at most :data:`DOOR_STARTS` unauthenticated logins at once through one door
  (a server's address, or the user's ProxyCommand, each start of which is a
  bastion login): below sshd's default ``MaxStartups 10:30:100``, past which
  sshd drops new connections at random.

A master that cannot start is kept as its own host's failure: its connection
raises that same error on its next use, and no other host is held up by it.
"""

from __future__ import annotations

import contextlib
import logging
import resource
import threading
from collections import Counter
from collections.abc import Hashable, Iterable, Iterator
from typing import TYPE_CHECKING

from .exceptions import ConnectFailed, ConnectTimedOut, RunInterrupted
from .login import is_transient
from .process import current

if TYPE_CHECKING:
    from .connection import MuxConnection
    from .route import Route

__all__ = ["DOOR_STARTS", "FIRST_STARTS", "Starter", "descriptor_room", "open_masters"]

log = logging.getLogger("fabric_mux")

#: Logins started at once through one door (see the module's notes).
DOOR_STARTS = 8
#: Logins started at once before any has completed.
FIRST_STARTS = 32
#: Descriptors a host holds at its busiest: a starting master's stderr file and
#: pipes, or a session's control socket, its three pipes' ends and an askpass socket.
DESCRIPTORS_A_HOST = 8
#: Descriptors kept back for everything else the process opens.
DESCRIPTORS_KEPT = 64
#: Seconds an interrupted run waits for its starts to end (their ssh killed).
UNWIND_SECONDS = 10.0


def descriptor_room() -> int:
    """How many hosts this process can work on at once, by its descriptor limit.

    The soft limit is raised to the hard one first (as ssh itself does): a
    fleet needs more than the usual 1024.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard and hard != resource.RLIM_INFINITY:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(1, (soft - DESCRIPTORS_KEPT) // DESCRIPTORS_A_HOST)


class Starter:
    """Brings connections' masters up, as many at once as the work allows.

    ``at_once``: the user's ``mux.masters_at_once`` (a fixed width, no doors);
    None adapts (see the module's notes). Thread-safe: each host's thread
    calls :meth:`open` for its own connection.
    """

    def __init__(self, at_once: int | None = None) -> None:
        self.fixed = at_once
        self.ceiling = at_once if at_once else descriptor_room()
        self.window = at_once if at_once else min(FIRST_STARTS, self.ceiling)
        self._starting = 0
        self._doors: Counter[Hashable] = Counter()
        self._changed = threading.Condition()
        self._interrupted = False
        #: Starts that waited for a slot, for tests and the curious.
        self.waited = 0

    def open(self, connection: MuxConnection) -> None:
        """Open ``connection``: at once if its master is up, else in a start slot.

        A failure is remembered by the connection (raised again on its next
        use) and raised.
        """
        try:
            route = connection.route()
            master = route.master()
            pid = master.alive()
            if pid is not None:
                connection.open_along(route, master, found=pid)
                return
            with self._slot(None if self.fixed else front_door(route)):
                connection.open_along(route, master)
        except Exception as exc:
            log.debug("%s: could not start its master: %s", connection.original_host, exc)
            connection.remember_failure(exc)
            raise

    def interrupt(self) -> None:
        """Ctrl-C: no start begins after this one."""
        with self._changed:
            self._interrupted = True
            self._changed.notify_all()

    @contextlib.contextmanager
    def _slot(self, door: Hashable | None) -> Iterator[None]:
        with self._changed:
            waited = False
            while not self._interrupted and (
                self._starting >= self.window
                or (door is not None and self._doors[door] >= DOOR_STARTS)
            ):
                waited = True
                self._changed.wait()
            if self._interrupted:
                raise RunInterrupted("interrupted (Ctrl-C) before this host's master started")
            self.waited += waited
            self._starting += 1
            self._doors[door] += 1
        grow, shrink = False, False
        try:
            yield
            grow = True
        except BaseException as exc:
            shrink = _overloaded(exc)
            raise
        finally:
            with self._changed:
                self._starting -= 1
                self._doors[door] -= 1
                if not self.fixed and grow:
                    self.window = min(self.ceiling, self.window + 1)
                if not self.fixed and shrink:
                    self.window = max(1, self.window // 2)
                self._changed.notify_all()


def _overloaded(exc: BaseException) -> bool:
    """Whether a failed start says that too many were under way (a timeout, a
    connection refused or reset), rather than something about its own host."""
    if isinstance(exc, ConnectTimedOut):
        return True
    return isinstance(exc, ConnectFailed) and is_transient(exc.stderr)


def front_door(route: Route) -> Hashable:
    """What sees a master's start as a new, unauthenticated connection: the
    user's ProxyCommand (each start a login through it, often at one bastion),
    else the server's address (as the hop, if any, reaches it)."""
    command = route.proxy_command()
    view = route.view()
    if command is None and view.get("proxycommand", "none") != "none":
        command = view["proxycommand"]
    if command is not None and route.hop() is None:
        return ("proxy", command)
    hop = route.hop()
    return ("server", hop.host if hop else None, view.get("hostname"), view.get("port"))


def open_masters(
    connections: Iterable[MuxConnection], at_once: int | None = None
) -> dict[MuxConnection, BaseException]:
    """Open every connection, as many at once as :class:`Starter` allows; the
    failures, by connection.

    Connections to one route share its master (and its lock: one login);
    a target behind a bastion opens the bastion first, so the bastion logs
    in once for all of them. Ctrl-C ends the starts under way (and the
    masters they made) before it goes on up.
    """
    pending = list(connections)
    failures: dict[MuxConnection, BaseException] = {}
    if not pending:
        return failures
    starter = Starter(at_once)
    left = len(pending)
    all_done = threading.Event()
    lock = threading.Lock()

    def open_one(connection: MuxConnection) -> None:
        nonlocal left
        try:
            starter.open(connection)
        except Exception as exc:  # each host's own; raised again on its next use
            failures[connection] = exc
        finally:
            with lock:
                left -= 1
                if not left:
                    all_done.set()

    # Daemon threads: Ctrl-C must not wait for a login to time out.
    for number, connection in enumerate(pending):
        name = f"fabric-mux start {number + 1}"
        threading.Thread(target=open_one, args=(connection,), name=name, daemon=True).start()
    try:
        all_done.wait()
    except BaseException:
        unwind_starts(starter)
        raise
    return failures


def unwind_starts(starter: Starter | None = None) -> None:
    """After Ctrl-C: no new start, the ones under way ended (their masters
    stopped, their locks let go), then starts allowed again."""
    with starts_refused(starter):
        pass


@contextlib.contextmanager
def starts_refused(starter: Starter | None = None) -> Iterator[None]:
    """:func:`unwind_starts`, with new starts still refused inside the block: a
    thread past its start slot, not logging in yet, cannot begin a login there."""
    if starter is not None:
        starter.interrupt()
    starts = current().starts
    starts.cancel()
    try:
        if not starts.wait_idle(UNWIND_SECONDS):
            log.warning("fabric-mux: some master starts did not end after Ctrl-C")
        yield
    finally:
        starts.resume()
