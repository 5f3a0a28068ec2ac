"""A master's login: ``ssh -M -N -f`` run to the end of its login, in a session
of its own, its prompts answered through :mod:`~fabric_mux.askpass` (what the
OpenSSH version allows: see :mod:`~fabric_mux.version`), a key's passphrase given
to a private agent for an ssh whose prompts a server can imitate, transient
failures retried, and what a failure says."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Protocol

from .argv import SshTarget, master_argv, quote_option_value
from .exceptions import (
    AuthenticationFailed,
    ConnectFailed,
    MasterStartFailed,
    RunInterrupted,
    SecretWithheld,
    SshNotFound,
    classify_ssh_failure,
)
from .peers import process_argv, processes_running, wait_for_exit
from .process import current
from .served import Endpoint, Served
from .target import Secrets
from .version import SshVersion, ssh_version

if TYPE_CHECKING:
    from .answers import PromptAnswers
    from .askpass import Asking

__all__ = [
    "RETRY_FIRST_DELAY",
    "Starting",
    "is_transient",
    "prompt_answers",
    "start",
    "start_with_retries",
]

log = logging.getLogger("fabric_mux")


class Starting(Protocol):
    """What a login needs of the master it starts (a :class:`~fabric_mux.master.Master`)."""

    ssh: str
    target: SshTarget
    start_target: SshTarget | None
    control_path: str
    extra_options: list[str]
    connect_retries: int
    users: bool
    users_proxy: bool
    served: dict[int, Served]
    endpoint: Endpoint

    @property
    def host(self) -> str: ...

    @property
    def forwards_agent(self) -> bool: ...

    def alive(self, timeout: float | None = None) -> int | None: ...

    def private_folder(self) -> Path: ...

    def identity_files(self, certificates: bool = True) -> list[str]: ...

    def prompt_host(self) -> tuple[str, str]: ...


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


def prompt_answers(secrets: Secrets, master: Starting) -> PromptAnswers | None:
    """Who answers the master's prompts: Fabric's ``secrets``, then the user.

    The password (``connect_kwargs["password"]``, ``fab
    --prompt-for-login-password``) answers only this master's own password
    prompts, the key passphrase only its route's own identity files; each
    once, as a second prompt means it was wrong and repeating it could
    lock the account. Anything else (a one-time code, a new host key's
    question) is asked on the user's terminal, when there is one. None:
    nothing can answer (the master then runs in batch mode).
    """
    # Imported here: called only when a master starts.
    from . import answers, terminal

    password, passphrase = secrets
    ask = terminal.ask_on_terminal if terminal.terminal_available() else None
    if not (password or passphrase or ask):
        return None
    user, host = master.prompt_host()
    return answers.PromptAnswers(
        user=user,
        host=host,
        identity_files=master.identity_files(),
        password=password,
        passphrase=passphrase,
        terminal=ask,
    )


def start_with_retries(master: Starting, persist: str, answer: PromptAnswers | None = None) -> int:
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
    retries = 0 if master.users_proxy else master.connect_retries
    for attempt in range(retries + 1):
        try:
            return start(master, persist, answer.renewed() if answer and attempt else answer)
        except ConnectFailed as exc:
            if attempt == retries or not is_transient(exc.stderr):
                if master.users_proxy and not exc.note:
                    raise type(exc)(
                        exc.host, exc.argv, exc.exit_code, exc.stderr, _PROXY_NOTE
                    ) from None
                raise
            log.info("retrying %s in %.1f s: %s", master.host, delay, exc.stderr.strip())
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


def start(master: Starting, persist: str, answer: PromptAnswers | None = None) -> int:
    # A socket nobody answers on is a dead master's: ssh would refuse to
    # bind over it and carry on without multiplexing.
    _clear_stale_socket(master)
    options = list(master.extra_options)
    if answer is not None and answer.has_password:
        # ssh sends an empty password when the helper declines: one prompt
        # only, so a wrong password costs one failed attempt, not three.
        options.append("NumberOfPasswordPrompts=1")
    batch = answer is None and not os.environ.get("SSH_ASKPASS")
    if batch:
        # Nothing here can answer a prompt (no terminal, no secret, no askpass
        # of the user's): fail at once rather than try and fail a password.
        options.append("BatchMode=yes")
    target = master.start_target or master.target
    argv = master_argv(master.ssh, target, master.control_path, persist, options)
    # Not a pipe: the backgrounded master inherits stderr and would keep a
    # pipe open, so reading it to its end would hang.
    with tempfile.TemporaryFile() as errors, contextlib.ExitStack() as stack:
        env = None
        asker = None
        if answer is not None and answer.asks_anything:
            from .askpass import asking

            folder = master.private_folder()
            version = ssh_version(master.ssh)
            if answer.has_passphrase and not version.marks_server_prompts:
                agent = _private_agent(master, stack, folder, answer, version)
                options.append(f"IdentityAgent={quote_option_value(agent.replace('%', '%%'))}")
                argv = master_argv(master.ssh, target, master.control_path, persist, options)
            answer = answer.for_ssh(version.marks_server_prompts)
            display = not version.forces_askpass
            asker = stack.enter_context(asking(folder, answer, display=display))
            env = {**os.environ, **asker.environment}
        log.debug("starting master: %s", argv)
        returncode = _run_master(master, argv, errors, env, asker)
        errors.seek(0)
        stderr = errors.read().decode("utf-8", "replace")
    if returncode != 0:
        note = answer.note() if answer is not None else ""
        failure = classify_ssh_failure(master.host, argv, returncode, stderr, note)
        if batch and isinstance(failure, AuthenticationFailed):
            note = _BATCH_NOTE.format(host=master.host)
            failure = AuthenticationFailed(master.host, argv, returncode, stderr, note)
        raise failure
    return _answering(master, argv, stderr)


def _answering(master: Starting, argv: list[str], stderr: str) -> int:
    """The pid of the master that answers once our ``argv`` has logged in.

    It is ours, unless another master took the path while ours logged in
    (the user's own ``ssh -fN``, at their path): ssh then says it is
    "disabling multiplexing" and stays logged in with no socket, where
    nothing could see or stop it. Such a master of ours is ended.
    """
    pid = master.alive()
    seen = process_argv(pid) if pid is not None else None
    ours = pid is not None and (seen is None or seen == argv)
    if not ours or _LOST in stderr:
        # Another master took the path while ours logged in: ours, logged in
        # with no socket, is ended. (Only then is every process looked at:
        # a fleet's starts would each read all of /proc otherwise.)
        _end_ours(master, argv, keep=pid if ours else None)
    if ours and pid is not None:
        master.served[pid] = Served(master.endpoint, None)
        log.info("started master pid %d for %s at %s", pid, master.host, master.control_path)
        return pid
    if pid is None:
        raise MasterStartFailed(master.host, argv, 0, stderr or "the master did not answer")
    log.info("%s: another master (pid %d) took %s first", master.host, pid, master.control_path)
    return pid


def _end_ours(master: Starting, argv: list[str], keep: int | None) -> None:
    """End every process of ours running ``argv`` (this master's command line)
    but ``keep``: masters logged in with no socket, which nothing else could
    see or stop."""
    for loser in processes_running(argv, os.geteuid()):
        if loser != keep:
            with contextlib.suppress(ProcessLookupError):
                os.kill(loser, signal.SIGTERM)
            log.info("%s: ended master pid %d, which had no socket", master.host, loser)


def _clear_stale_socket(master: Starting) -> None:
    """Remove the socket of a master that is gone (nothing answered on it):
    ssh would refuse to bind over it and carry on without multiplexing.
    At the user's own path, only a socket of ours, as ``ControlMaster
    auto`` would (and never another kind of file)."""
    try:
        info = os.lstat(master.control_path)
    except FileNotFoundError:
        return
    if master.users and not (stat.S_ISSOCK(info.st_mode) and info.st_uid == os.geteuid()):
        return
    with contextlib.suppress(FileNotFoundError):
        os.unlink(master.control_path)


def _private_agent(
    master: Starting,
    stack: contextlib.ExitStack,
    folder: Path,
    answer: PromptAnswers,
    version: SshVersion,
) -> str:
    """A private agent holding the route's keys, unlocked by the passphrase, for
    an ssh whose prompts a server can imitate (see :mod:`fabric_mux.agent`);
    its socket. It ends when ``stack`` closes: once the master has logged in.

    :raises SecretWithheld: with ForwardAgent on, which would hand the
        agent, and so the unlocked keys, to the server.
    """
    if master.forwards_agent:
        raise SecretWithheld(
            f"{master.host}: the key passphrase from connect_kwargs is not used with "
            f"ForwardAgent on: {master.ssh} is {version}, whose prompts a server can "
            "imitate (before 8.5), so fabric-mux gives the passphrase only to a private "
            "ssh-agent, which this master would forward to the server. Turn ForwardAgent "
            "off for this host, or add the key to your own agent (ssh-add) and leave "
            "the passphrase out; nothing was started"
        )
    from .agent import private_agent

    keys = master.identity_files(certificates=False)
    return stack.enter_context(
        private_agent(master.ssh, folder, keys, answer.for_ssh_add(), master.host)
    )


def _run_master(
    master: Starting,
    argv: list[str],
    errors: IO[bytes],
    env: dict[str, str] | None,
    asker: Asking | None,
) -> int:
    """Run ``ssh -M -N -f`` to the end of its login; its exit code.

    In a session of its own: a hangup or Ctrl-C on the user's terminal
    must not reach the master, nor a ProxyCommand it starts, which would
    take the master down with it. (So ssh has no terminal to prompt on:
    prompts reach the user through :mod:`~fabric_mux.askpass`.)
    """
    starts = current().starts
    if starts.stopping:
        raise RunInterrupted(f"{master.host}: interrupted (Ctrl-C) before its master started")
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
        raise SshNotFound(f"no ssh program at {master.ssh}") from None
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
        # Interrupted before the login ended: a half-made master is nobody's,
        # nor the ProxyCommand it runs (its group's).
        starts.end(proc)
        starts.kill_login(proc)
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
            _end_ours(master, argv, keep=None)
        raise RunInterrupted(f"{master.host}: interrupted (Ctrl-C) while its master started")
    return returncode
