"""The OpenSSH master of one route: its control socket, its process, its lock."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import logging
import os
import pwd
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NamedTuple

from .argv import (
    MAX_CONTROL_PATH,
    SshTarget,
    control_path_option,
    control_socket_name,
    expand_path,
    fallback_options,
    master_argv,
    master_identity,
    parse_resolved_config,
    quote_option_value,
    resolved_values,
)
from .controldir import user_locks
from .exceptions import (
    AuthenticationFailed,
    BadForward,
    ConfigChanged,
    ConnectFailed,
    ControlDirUnusable,
    ForwardFailed,
    MasterNotResponding,
    MasterStartFailed,
    MasterUnavailable,
    RequestDenied,
    RunInterrupted,
    SecretWithheld,
    ServesAnotherRoute,
    SshNotFound,
    StartWaitTimedOut,
    UserMasterLeftAlone,
    classify_ssh_failure,
    descriptor_errors,
)
from .peers import process_argv, processes_running, processes_with_argument, wait_for_exit
from .process import current
from .protocol import FWD_LOCAL, MuxClient
from .resolve import resolve_config
from .served import Endpoint, Served
from .slots import SessionSlots
from .version import SshVersion, ssh_version

if TYPE_CHECKING:
    from .askpass import Asking, PromptAnswers

__all__ = ["ForwardSpec", "Master", "alive_pid", "master_pids", "stop_socket"]

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


#: What ssh says when it finds its ControlPath taken as it is about to listen there.
_LOST = "disabling multiplexing"

#: Seconds before the first retry of a transient connect failure; doubled each time.
RETRY_FIRST_DELAY = 0.25

_TRANSIENT = ("Connection refused", "Connection reset", "kex_exchange_identification")

#: Words that make a failure final, whatever else ssh said: a ProxyCommand's
#: own ssh refused at the bastion leaves the outer ssh saying its connection
#: was closed, which alone would look like a network blip.
_FINAL = (
    "Permission denied",
    "Too many authentication failures",
    "Host key verification failed",
    "REMOTE HOST IDENTIFICATION HAS CHANGED",
)

_PROXY_NOTE = (
    "the connection went through your ProxyCommand, whose own messages ssh does not "
    "show here: it was not retried (a refused login could lock the account); run the "
    "ProxyCommand by hand to see why"
)

_BATCH_NOTE = (
    "nothing here could answer a login prompt (no terminal, no password or passphrase "
    "in connect_kwargs), so ssh was not let ask: start the master first (for instance "
    "`ssh -fN {host}` with ControlMaster and ControlPath in your ssh_config, which "
    "fabric-mux then rides), or log in with a key that needs nothing typed (an agent)"
)


def is_transient(stderr: str) -> bool:
    """Whether ssh's words describe a failure worth another try."""
    if any(marker in stderr for marker in _FINAL):
        return False
    return any(marker in stderr for marker in _TRANSIENT)


class ForwardSpec(NamedTuple):
    """A forward as the mux protocol states it."""

    kind: int
    listen_host: str
    listen_port: int
    connect_host: str
    connect_port: int

    def check(self) -> None:
        if not 0 <= self.listen_port <= 65535:
            raise BadForward(f"cannot listen on port {self.listen_port}: ports are 0-65535")
        if not 1 <= self.connect_port <= 65535:
            raise BadForward(f"cannot connect to port {self.connect_port}: ports are 1-65535")

    def describe(self) -> str:
        where = "local" if self.kind == FWD_LOCAL else "remote"
        return (
            f"{where} {self.listen_host}:{self.listen_port} to "
            f"{self.connect_host}:{self.connect_port}"
        )


class _Forward:
    def __init__(self, port: int) -> None:
        self.port = port
        self.users = 0


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


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
        self._forwards: dict[ForwardSpec, _Forward] = {}
        self._forwards_lock = threading.Lock()
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
                    pid = self._start_with_retries(persist, answer() if answer else None)
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
        folder = user_locks() if self.users else self._private_folder()
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

    def _start_with_retries(self, persist: str, answer: PromptAnswers | None = None) -> int:
        """Start the master, retrying transient network failures with backoff.

        A refused or reset connection (sshd restarting, its MaxStartups
        dropping us) often goes away; a failed authentication or host key, an
        unknown host or a timeout does not, and is never retried (a retry
        could lock an account or multiply the wait).
        """
        delay = RETRY_FIRST_DELAY
        # Through the user's ProxyCommand, a refusal at its far end (a bastion's
        # "Permission denied") reaches us only as a closed connection, since ssh
        # sends the command's stderr to /dev/null under ControlPersist: OpenSSH
        # never retries a ProxyCommand (ConnectionAttempts), and neither do we.
        retries = 0 if self.users_proxy else self.connect_retries
        for attempt in range(retries + 1):
            try:
                return self._start(persist, answer.renewed() if answer and attempt else answer)
            except ConnectFailed as exc:
                if attempt == retries or not is_transient(exc.stderr):
                    if self.users_proxy and not exc.note:
                        raise type(exc)(
                            exc.host, exc.argv, exc.exit_code, exc.stderr, _PROXY_NOTE
                        ) from None
                    raise
                log.info("retrying %s in %.1f s: %s", self.host, delay, exc.stderr.strip())
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def _start(self, persist: str, answer: PromptAnswers | None = None) -> int:
        # A socket nobody answers on is a dead master's: ssh would refuse to
        # bind over it and carry on without multiplexing.
        self._clear_stale_socket()
        options = list(self.extra_options)
        if answer is not None and answer.has_password:
            # ssh sends an empty password when the helper declines: one prompt
            # only, so a wrong password costs one failed attempt, not three.
            options.append("NumberOfPasswordPrompts=1")
        batch = answer is None and not os.environ.get("SSH_ASKPASS")
        if batch:
            # Nothing here can answer a prompt (no terminal, no secret, no askpass
            # of the user's): fail at once rather than try and fail a password.
            options.append("BatchMode=yes")
        target = self.start_target or self.target
        argv = master_argv(self.ssh, target, self.control_path, persist, options)
        # Not a pipe: the backgrounded master inherits stderr and would keep a
        # pipe open, so reading it to its end would hang.
        with tempfile.TemporaryFile() as errors, contextlib.ExitStack() as stack:
            env = None
            asker = None
            if answer is not None and answer.asks_anything:
                from .askpass import asking

                folder = self._private_folder()
                version = ssh_version(self.ssh)
                if answer.has_passphrase and not version.marks_server_prompts:
                    agent = self._private_agent(stack, folder, answer, version)
                    options.append(f"IdentityAgent={quote_option_value(agent.replace('%', '%%'))}")
                    argv = master_argv(self.ssh, target, self.control_path, persist, options)
                answer = answer.for_ssh(version.marks_server_prompts)
                display = not version.forces_askpass
                asker = stack.enter_context(asking(folder, answer, display=display))
                env = {**os.environ, **asker.environment}
            log.debug("starting master: %s", argv)
            returncode = self._run_master(argv, errors, env, asker)
            errors.seek(0)
            stderr = errors.read().decode("utf-8", "replace")
        if returncode != 0:
            note = answer.note() if answer is not None else ""
            failure = classify_ssh_failure(self.host, argv, returncode, stderr, note)
            if batch and isinstance(failure, AuthenticationFailed):
                note = _BATCH_NOTE.format(host=self.host)
                failure = AuthenticationFailed(self.host, argv, returncode, stderr, note)
            raise failure
        return self._answering(argv, stderr)

    def _answering(self, argv: list[str], stderr: str) -> int:
        """The pid of the master that answers once our ``argv`` has logged in.

        It is ours, unless another master took the path while ours logged in
        (the user's own ``ssh -fN``, at their path): ssh then says it is
        "disabling multiplexing" and stays logged in with no socket, where
        nothing could see or stop it. Such a master of ours is ended.
        """
        pid = self.alive()
        seen = process_argv(pid) if pid is not None else None
        ours = pid is not None and (seen is None or seen == argv)
        if not ours or _LOST in stderr:
            # Another master took the path while ours logged in: ours, logged in
            # with no socket, is ended. (Only then is every process looked at:
            # a fleet's starts would each read all of /proc otherwise.)
            self._end_ours(argv, keep=pid if ours else None)
        if ours and pid is not None:
            self.served[pid] = Served(self.endpoint, None)
            log.info("started master pid %d for %s at %s", pid, self.host, self.control_path)
            return pid
        if pid is None:
            raise MasterStartFailed(self.host, argv, 0, stderr or "the master did not answer")
        log.info("%s: another master (pid %d) took %s first", self.host, pid, self.control_path)
        return pid

    def _end_ours(self, argv: list[str], keep: int | None) -> None:
        """End every process of ours running ``argv`` (this master's command line)
        but ``keep``: masters logged in with no socket, which nothing else could
        see or stop."""
        for loser in processes_running(argv, os.geteuid()):
            if loser != keep:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(loser, signal.SIGTERM)
                log.info("%s: ended master pid %d, which had no socket", self.host, loser)

    def _private_folder(self) -> Path:
        if self.private_dir is None:
            raise ControlDirUnusable(
                f"{self.host}: no control folder of fabric-mux's own to start a master from"
            )
        return self.private_dir

    def _clear_stale_socket(self) -> None:
        """Remove the socket of a master that is gone (nothing answered on it):
        ssh would refuse to bind over it and carry on without multiplexing.
        At the user's own path, only a socket of ours, as ``ControlMaster
        auto`` would (and never another kind of file)."""
        try:
            info = os.lstat(self.control_path)
        except FileNotFoundError:
            return
        if self.users and not (stat.S_ISSOCK(info.st_mode) and info.st_uid == os.geteuid()):
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.control_path)

    def _private_agent(
        self, stack: contextlib.ExitStack, folder: Path, answer: PromptAnswers, version: SshVersion
    ) -> str:
        """A private agent holding the route's keys, unlocked by the passphrase, for
        an ssh whose prompts a server can imitate (see :mod:`fabric_mux.agent`);
        its socket. It ends when ``stack`` closes: once the master has logged in.

        :raises SecretWithheld: with ForwardAgent on, which would hand the
            agent, and so the unlocked keys, to the server.
        """
        if self.forwards_agent:
            raise SecretWithheld(
                f"{self.host}: the key passphrase from connect_kwargs is not used with "
                f"ForwardAgent on: {self.ssh} is {version}, whose prompts a server can "
                "imitate (before 8.5), so fabric-mux gives the passphrase only to a private "
                "ssh-agent, which this master would forward to the server. Turn ForwardAgent "
                "off for this host, or add the key to your own agent (ssh-add) and leave "
                "the passphrase out; nothing was started"
            )
        from .agent import private_agent

        keys = self.identity_files(certificates=False)
        return stack.enter_context(
            private_agent(self.ssh, folder, keys, answer.for_ssh_add(), self.host)
        )

    def _run_master(
        self, argv: list[str], errors: IO[bytes], env: dict[str, str] | None, asker: Asking | None
    ) -> int:
        """Run ``ssh -M -N -f`` to the end of its login; its exit code.

        In a session of its own: a hangup or Ctrl-C on the user's terminal
        must not reach the master, nor a ProxyCommand it starts, which would
        take the master down with it. (So ssh has no terminal to prompt on:
        prompts reach the user through :mod:`~fabric_mux.askpass`.)
        """
        starts = current().starts
        if starts.stopping:
            raise RunInterrupted(f"{self.host}: interrupted (Ctrl-C) before its master started")
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=errors,
                env=env,
                start_new_session=True,
            )
        except FileNotFoundError:
            raise SshNotFound(f"no ssh program at {self.ssh}") from None
        starts.begin(proc)
        try:
            if asker is not None:
                asker.started(proc.pid)
            # Its end, without reaping it: until we stop serving prompts and
            # Ctrl-C can no longer kill its group, its pid must stay taken.
            wait_for_exit(proc.pid)
            if asker is not None:
                asker.stop()
        except BaseException:
            # Interrupted before the login ended: a half-made master is nobody's.
            starts.end(proc)
            proc.kill()
            proc.wait()
            raise
        wanted = starts.end(proc)
        returncode = proc.wait()
        if not wanted:
            # Ctrl-C came while it logged in: a master of ours that came up anyway
            # would otherwise stay for its whole persist time. Found by its
            # command line, never by the path: the user's own master may have
            # taken that meanwhile.
            if returncode == 0:
                self._end_ours(argv, keep=None)
            raise RunInterrupted(f"{self.host}: interrupted (Ctrl-C) while its master started")
        return returncode

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

    @contextlib.contextmanager
    def forward(self, spec: ForwardSpec) -> Iterator[int]:
        """Hold a port forward on the master for the block; yields its listening port.

        The master shares identical forwards and one cancel removes them all,
        so identical blocks of this process share one forward, cancelled when
        the last of them ends. A local port 0 gets a free port of ours (the
        master's own choice is not reported back for local forwards).

        :raises BadForward: for a port outside 0-65535 (1-65535 to connect to).
        :raises ForwardFailed: when the master cannot listen (a busy port).
        :raises MasterUnavailable: when the master is not there.
        """
        spec.check()
        with self._forwards_lock:
            entry = self._forwards.get(spec)
            if entry is None:
                if spec.kind == FWD_LOCAL and spec.listen_port == 0:
                    spec = self._open_on_free_port(spec)
                    port = spec.listen_port
                else:
                    port = self._open_forward(spec)
                entry = self._forwards[spec] = _Forward(port)
            entry.users += 1
        try:
            yield entry.port
        finally:
            with self._forwards_lock:
                entry.users -= 1
                if entry.users == 0:
                    del self._forwards[spec]
                    self._cancel_forward(spec)

    def _open_forward(self, spec: ForwardSpec) -> int:
        """Ask the master for ``spec``; the port it listens on."""
        client = self.client()
        try:
            chosen = client.open_forward(*spec)
        except RequestDenied as exc:
            raise ForwardFailed(
                f"{self.host}: could not forward {spec.describe()}: {exc.reason}"
            ) from None
        finally:
            client.close()
        return chosen or spec.listen_port

    def _open_on_free_port(self, spec: ForwardSpec) -> ForwardSpec:
        """A local forward on a port nothing listens on; a few tries, as one may be
        taken between our look and the master's bind."""
        for attempt in range(3):
            candidate = spec._replace(listen_port=_free_port(spec.listen_host))
            try:
                self._open_forward(candidate)
            except ForwardFailed:
                if attempt == 2:
                    raise
                continue
            return candidate
        raise AssertionError("unreachable")

    def _cancel_forward(self, spec: ForwardSpec) -> None:
        try:
            client = self.client()
        except MasterUnavailable:
            return  # the master, and its forwards with it, went away already
        try:
            client.close_forward(*spec)
        except (RequestDenied, MasterUnavailable, OSError):
            pass
        finally:
            client.close()

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
