"""The OpenSSH master of one route: its control socket and its process's life,
found or started (under :mod:`~fabric_mux.startlock`, logged in by
:mod:`~fabric_mux.login`), asked whether it is alive, held, stopped."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pwd
import signal
import socket
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .argv import (
    MAX_CONTROL_PATH,
    SshTarget,
    control_path_option,
    control_socket_name,
    expand_path,
    fallback_options,
    master_identity,
    parse_resolved_config,
    resolved_values,
    this_run_only,
)
from .controldir import user_locks
from .exceptions import (
    ConfigChanged,
    ControlDirUnusable,
    MasterNotResponding,
    MasterUnavailable,
    ServesAnotherRoute,
    UserMasterLeftAlone,
)
from .forwards import Forwards, ForwardSpec
from .login import is_transient, start_with_retries
from .peers import processes_with_argument
from .process import current
from .protocol import MuxClient
from .resolve import resolve_config
from .served import Endpoint, Served
from .slots import SessionSlots
from .startlock import route_lock

if TYPE_CHECKING:
    from .answers import PromptAnswers

__all__ = [
    "ForwardSpec",
    "Master",
    "alive_pid",
    "is_transient",
    "master_pids",
    "stop_socket",
]

log = logging.getLogger("fabric_mux")


class Master:
    """One route's OpenSSH master, shared by every connection of this process.

    Get instances with :meth:`for_target`: one object per control path, so
    threads share its session limit and its hold.
    """

    def __init__(
        self,
        ssh: str,
        target: SshTarget,
        control_path: str,
        extra_options: Sequence[str],
        max_sessions: int,
        reply_timeout: float | None,
        connect_retries: int = 0,
        resolved: str = "",
        private_dir: Path | None = None,
    ) -> None:
        self.ssh = ssh
        self.target = target
        self.control_path = control_path
        self.extra_options = list(extra_options)
        self.reply_timeout = reply_timeout
        self.connect_retries = connect_retries
        self.resolved = ""
        self._view: Mapping[str, str] = {}
        self._take_view(resolved)
        #: What the socket is named after (:func:`~fabric_mux.argv.master_identity`).
        self.identity = master_identity(resolved, target.destination, os.environ)
        #: Where the route this object was made for connects (see :mod:`fabric_mux.served`).
        self.endpoint = Endpoint.of(self._view)
        #: fabric-mux's own private folder: the start's lock, askpass and agent
        #: sockets, a hop's error log, whatever folder the socket is in.
        self.private_dir = private_dir
        #: What each master process seen at the socket serves, by pid.
        self.served: dict[int, Served] = {}
        #: Sessions this process may have open on the master at once.
        self.sessions = SessionSlots(max_sessions)
        #: Requests this process sent the master, by kind ("new session",
        #: "alive check"...): what an operation costs, for tests and the curious.
        self.requests: Counter[str] = Counter()
        #: The master's pid, once known.
        self.pid: int | None = None
        #: The remote account's home, once a transfer needed it (one login, one home).
        self.remote_home: str | None = None
        #: Port forwards open on the master, with how many blocks of ours use each.
        self._forwards = Forwards(self.client, target.destination)
        self._hold: MuxClient | None = None
        self._holders = 0
        self._state = threading.Lock()
        #: A socket the user's ssh_config names (see :mod:`fabric_mux.route`): the
        #: user's to stop, even where fabric-mux started the master.
        self.users = False
        #: What to start the master with, when that is not :attr:`target` (the
        #: way through a hop's master, for a master at the user's own path).
        self.start_target: SshTarget | None = None
        #: Whether ssh reaches the host through a ProxyCommand of the user's (from
        #: ssh_config, or a Fabric gateway string), whose failures we cannot see.
        self.users_proxy = False

    @classmethod
    def for_target(
        cls,
        ssh: str,
        target: SshTarget,
        control_dir: Path,
        resolved_text: str | None = None,
        **settings: Any,
    ) -> Master:
        """The shared :class:`Master` of ``target``'s route in ``control_dir``.

        Its socket is named after OpenSSH's whole view of the connection
        (:func:`~fabric_mux.argv.master_identity`): two targets share a master,
        in this process and across processes, only where OpenSSH would connect
        them identically. So whichever of them starts it, it is the same login.
        ``resolved_text``: ``ssh -G``'s answer for ``target``, when the caller
        has it. ``settings``: see :meth:`shared`.
        """
        if resolved_text is None:
            resolved_text = resolve_config(ssh, target, keep_in=control_dir)
        identity = master_identity(resolved_text, target.destination, os.environ)
        control_path = str(control_dir / control_socket_name(identity))
        said = current().said  # once a master, not once an alias of it
        if this_run_only(identity) and ("this run only", control_path) not in said:
            said.add(("this run only", control_path))
            log.warning(
                "fabric-mux: %s: its ProxyCommand or KnownHostsCommand has words its shell "
                "makes only as it runs ($(...), `...`, eval, $$, a variable named by "
                "another), which no other run can check: its master serves this run only",
                target.destination,
            )
        if len(control_path.encode()) > MAX_CONTROL_PATH:
            raise ControlDirUnusable(
                f"control socket path {control_path} is longer than {MAX_CONTROL_PATH} bytes "
                "(the UNIX socket limit once ssh adds its suffix): use a shorter mux.control_dir"
            )
        return cls.shared(ssh, target, control_path, resolved_text, control_dir, **settings)

    @classmethod
    def at_user_path(
        cls,
        ssh: str,
        target: SshTarget,
        control_path: str,
        resolved_text: str,
        private_dir: Path | None,
        **settings: Any,
    ) -> Master:
        """The shared :class:`Master` at the user's own ``control_path`` (their
        ssh_config's ControlPath, or ``mux.control_path``): never stopped,
        replaced or removed by fabric-mux, which did not start it.
        ``resolved_text``: ``ssh -G``'s answer for ``target``.

        Other routes may name the same path: each endpoint gets an object of
        its own, and only one of them can be served by the master there.
        """
        endpoint = Endpoint.of(parse_resolved_config(resolved_text))
        key = f"{control_path}\n{endpoint}"
        master = cls.shared(ssh, target, control_path, resolved_text, private_dir, key, **settings)
        master.users = True
        return master

    @classmethod
    def shared(
        cls,
        ssh: str,
        target: SshTarget,
        control_path: str,
        resolved_text: str,
        private_dir: Path | None = None,
        key: str | None = None,
        *,
        server_alive: tuple[int, int] | None = None,
        connect_timeout: int | None = None,
        max_sessions: int = 10,
        reply_timeout: float | None = 30.0,
        connect_retries: int = 0,
    ) -> Master:
        """This process's one :class:`Master` of ``control_path`` (made on first ask);
        ``key``, when given, tells it apart from other objects of that path."""

        def make() -> Master:
            return cls(
                ssh,
                target,
                control_path,
                fallback_options(
                    parse_resolved_config(resolved_text), server_alive, connect_timeout
                ),
                max_sessions,
                reply_timeout,
                connect_retries,
                resolved_text,
                private_dir,
            )

        return current().registry(Master).get(key or control_path, make)

    @property
    def host(self) -> str:
        return self.target.destination

    @property
    def forwards_agent(self) -> bool:
        """Whether the master forwards the agent (so sessions may ask for it)."""
        return self._view.get("forwardagent", "no") != "no"

    def client(self) -> MuxClient:
        """A new control connection (raises :class:`MasterUnavailable`)."""
        return MuxClient(self.control_path, self.reply_timeout, self.host, self.requests)

    def alive(self, timeout: float | None = None) -> int | None:
        """The running master's pid, or None when there is none (or a stale socket).

        :raises MasterNotResponding: a master is there but does not answer.
        """
        return alive_pid(self.control_path, timeout or self.reply_timeout, self.host, self.requests)

    def ensure(
        self,
        persist: str,
        answer: Callable[[], PromptAnswers | None] | None = None,
        check: Callable[[int], str | None] | None = None,
    ) -> int:
        """Find the route's live master or start one; returns its pid.

        Starting happens under the route's lock, so racing threads and
        processes make one login between them, not one each. ``answer``, if
        given, makes what answers ssh's prompts (see :mod:`fabric_mux.askpass`):
        called only when a master starts, as finding one up asks nothing.
        ``check``, for a path that several routes can name: given the pid that
        answers, None if that master serves the route, else what it serves.

        :raises ServesAnotherRoute: the master that answers serves another route.
        """
        pid = self.alive()
        if pid is None:
            starts = current().starts
            with starts.busy(), route_lock(self.lock_path(), self.host, self.control_path):
                pid = self.alive()
                if pid is None:
                    self._check_view()
                    pid = start_with_retries(self, persist, answer() if answer else None)
        else:
            log.debug("reusing master pid %d for %s at %s", pid, self.host, self.control_path)
        if check is not None:
            serves = check(pid)
            if serves is not None:
                raise ServesAnotherRoute(self.control_path, serves)
        self.pid = pid
        return pid

    def lock_path(self) -> str:
        """The lock file of starts of this master: in the private folder for a
        master of ours; for one at the user's path, in the one folder every
        fabric-mux process of this user shares, whatever its control folder
        (cron's and a terminal's differ), so that no two start there at once."""
        folder = user_locks() if self.users else self.private_folder()
        return str(folder / f"{control_socket_name(self.control_path)}.lock")

    def _check_view(self) -> None:
        """Make sure, just before starting, that OpenSSH's view is still the one the
        socket is named after: the master reads ssh_config now, and a file may
        have changed since. ``ssh -G`` is asked again unless every file it read
        is provably unchanged (see :mod:`fabric_mux.resolve`)."""
        fresh = resolve_config(self.ssh, self.target)
        if master_identity(fresh, self.host, os.environ) != self.identity:
            raise ConfigChanged(
                f"{self.host}: its ssh_config changed while connecting (ssh -G now says "
                "otherwise); nothing was started: run again"
            )
        self._take_view(fresh)

    def _take_view(self, resolved: str) -> None:
        #: ``ssh -G``'s output for the route: what OpenSSH will do.
        self.resolved = resolved
        self._view = parse_resolved_config(resolved)  # read on every run: parsed once

    def private_folder(self) -> Path:
        """fabric-mux's own private folder, where a start keeps its lock, askpass
        and agent sockets."""
        if self.private_dir is None:
            raise ControlDirUnusable(
                f"{self.host}: no control folder of fabric-mux's own to start a master from"
            )
        return self.private_dir

    def prompt_host(self) -> tuple[str, str]:
        """The ``(user, host)`` that ssh names in this master's login prompts."""
        resolved = self._view
        return resolved.get("user", ""), resolved.get("hostkeyalias") or resolved.get(
            "hostname", self.host
        )

    def identity_files(self, certificates: bool = True) -> list[str]:
        """The route's identity and (unless not ``certificates``) certificate files,
        as ssh expands their paths.

        A path ssh would expand with something unknown here is left out: its
        passphrase prompt then goes to the user, not to a stored secret.
        """
        resolved = self._view
        account = pwd.getpwuid(os.geteuid())
        local = socket.gethostname()
        user, hostname, port = (
            resolved.get("user", ""),
            resolved.get("hostname", ""),
            resolved.get("port", "22"),
        )
        tokens = {
            "d": account.pw_dir,
            "u": account.pw_name,
            "i": str(os.geteuid()),
            "l": local,
            "L": local.split(".")[0],
            "h": hostname,
            "p": port,
            "r": user,
            "n": self.host,
            "k": resolved.get("hostkeyalias") or self.host,
            "C": hashlib.sha1((local + hostname + port + user).encode()).hexdigest(),
        }
        paths = []
        keywords = ("identityfile", "certificatefile") if certificates else ("identityfile",)
        for keyword in keywords:
            for value in resolved_values(self.resolved, keyword):
                expanded = expand_path(value, tokens, os.environ)
                if expanded is not None and value.lower() != "none":
                    paths.append(expanded)
        return paths

    def hold(self) -> None:
        """Keep a control connection open: a ``ControlPersist=1`` master lives while held."""
        with self._state:
            if self._hold is None:
                self._hold = self.client()
            self._holders += 1

    def release(self) -> None:
        """Drop one hold; the last one closes the control connection."""
        with self._state:
            self._holders = max(0, self._holders - 1)
            if self._holders == 0 and self._hold is not None:
                self._hold.close()
                self._hold = None

    def forward(self, spec: ForwardSpec) -> contextlib.AbstractContextManager[int]:
        """Hold a port forward on the master for the block; yields its listening port.
        Identical blocks of this process share one forward (see
        :class:`~fabric_mux.forwards.Forwards`).

        :raises BadForward: for a port outside 0-65535 (1-65535 to connect to).
        :raises ForwardFailed: when the master cannot listen (a busy port).
        :raises MasterUnavailable: when the master is not there.
        """
        return self._forwards.hold(spec)

    def stop(self) -> bool:
        """Stop the master now (its sessions end); False if none was running.

        :raises UserMasterLeftAlone: for a master at the user's own path.
        """
        if self.users:
            raise UserMasterLeftAlone(
                f"{self.host}: the master at {self.control_path} is your own (your ssh_config "
                f"names it): fabric-mux leaves it alone; end it with ssh -O exit {self.host}"
            )
        stopped = stop_socket(self.control_path)
        if stopped:
            log.info("stopped master for %s at %s", self.host, self.control_path)
        return stopped


def alive_pid(
    path: str,
    timeout: float | None = 5.0,
    label: str = "",
    counter: Counter[str] | None = None,
) -> int | None:
    """The pid of the master answering on ``path``; None if none does (or it is stale).

    :raises MasterNotOurs: when another user's process answers there: never
        mistaken for a stale socket, to be replaced quietly.
    :raises MasterNotResponding: when a master is there but does not answer
        (stopped, or hung): replacing it would make a second master. It names
        the master's pid, found among our processes.
    """
    try:
        client = MuxClient(path, timeout, label, counter)
        try:
            return client.alive_check()
        finally:
            client.close()
    except MasterUnavailable:
        return None  # none there, or it went away as we asked
    except MasterNotResponding as exc:
        raise _naming_the_master(exc, path) from None


def master_pids(path: str) -> list[int]:
    """Our running masters of the socket ``path``, found by their argv.

    Not the socket's peer credentials: a master started with ``-f`` listens
    first and forks after, so the kernel names a process long gone.
    """
    return processes_with_argument(control_path_option(path), os.geteuid())


def _naming_the_master(exc: MasterNotResponding, path: str) -> MasterNotResponding:
    pids = master_pids(path)
    if len(pids) != 1:
        return exc
    named = MasterNotResponding(
        exc.message.replace("the master on", f"the master (pid {pids[0]}) on")
    )
    named.pid = pids[0]
    return named


def stop_socket(path: str) -> bool:
    """End the master listening on ``path``, or clear a stale socket.

    True if a master was running.
    """
    try:
        client = MuxClient(path, timeout=5)
    except MasterUnavailable:
        stopped = False
    except MasterNotResponding as exc:
        # Stopped or hung: it cannot hear a request to exit. Stopping it is
        # what was asked, and only ours are found.
        pids = master_pids(path)
        if not pids:
            raise _naming_the_master(exc, path) from None
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        stopped = True
    else:
        try:
            client.terminate()
        except (MasterUnavailable, OSError):
            pass  # it may go before it answers
        finally:
            client.close()
        stopped = True
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return stopped
