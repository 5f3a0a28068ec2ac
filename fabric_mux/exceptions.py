"""Every exception fabric-mux raises: one root, :class:`MuxError`.

Where stock Fabric (that is, paramiko) reports the same failure with another
type, the subclass is that type too, so users' ``except`` clauses keep working:
an unknown host is also a ``socket.gaierror``, a refused or unreachable server
also paramiko's ``NoValidConnectionsError``, a timeout also ``socket.timeout``
(``TimeoutError``), a failed login also ``paramiko.AuthenticationException``,
any other SSH failure also ``paramiko.SSHException``.

Remote command failures are not here: they stay invoke's ``UnexpectedExit``
so that ``warn=True`` and existing ``except`` clauses keep working.

Each exception keeps its fields as attributes and pickles and copies with
them (``multiprocessing`` and ``concurrent.futures`` move exceptions between
processes).
"""

from __future__ import annotations

import contextlib
import errno
import resource
import socket
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from invoke.exceptions import Exit
from paramiko import AuthenticationException, ChannelException, SSHException
from paramiko.ssh_exception import NoValidConnectionsError

__all__ = [
    "AuthenticationFailed",
    "BadConfig",
    "BadForward",
    "BadHostList",
    "BadSshOption",
    "ConfigChanged",
    "ConnectFailed",
    "ConnectTimedOut",
    "ControlDirUnsafe",
    "ControlDirUnusable",
    "EmptyHostList",
    "EnvNotSent",
    "ForwardFailed",
    "HostKeyFailed",
    "HostListUnsafe",
    "MasterLost",
    "MasterNotOurs",
    "MasterNotResponding",
    "MasterStartFailed",
    "MasterUnavailable",
    "MuxError",
    "MuxProtocolError",
    "OutOfDescriptors",
    "RequestDenied",
    "RunInterrupted",
    "SecretWithheld",
    "ServerUnreachable",
    "ServesAnotherRoute",
    "SessionRefused",
    "SshNotFound",
    "StartWaitTimedOut",
    "TransferNeedsSftp",
    "UnknownHost",
    "UnsupportedSsh",
    "UserMasterLeftAlone",
    "classify_ssh_failure",
    "descriptor_errors",
]


def _rebuild(cls: type[MuxError], state: dict[str, Any]) -> MuxError:
    error = cls.__new__(cls)
    error.__dict__.update(state)
    error._init_stock()
    return error


class MuxError(Exception):
    """Root of every error fabric-mux raises itself."""

    #: For subclasses that are also an ``OSError``: the errno they carry.
    os_errno: ClassVar[int | None] = None

    def __init__(self, message: str) -> None:
        self.message = message
        self._init_stock()

    def _init_stock(self) -> None:
        # Not super().__init__: stock bases take their own arguments
        # (NoValidConnectionsError a dict, ChannelException a code).
        if isinstance(self, OSError):
            OSError.__init__(self, self.os_errno, self.message)
        else:
            Exception.__init__(self, self.message)

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), dict(self.__dict__)))


class SshNotFound(MuxError, FileNotFoundError):
    """The ``ssh`` program named by ``mux.ssh_path`` is not there."""

    os_errno = errno.ENOENT


class UnsupportedSsh(MuxError):
    """The ``ssh`` program is not OpenSSH, or one too old (``ssh -G`` came in 6.8)."""


class SecretWithheld(MuxError):
    """A password or passphrase from ``connect_kwargs`` cannot be given safely with
    this OpenSSH and these settings; nothing was started."""


class ControlDirUnsafe(MuxError):
    """The control folder, or a folder above it, is not private to this user.

    Nothing was created or written then.
    """


class ControlDirUnusable(MuxError):
    """The control folder cannot be made or used (read-only, not UTF-8...).

    Nothing was created then.
    """


class ConfigChanged(MuxError):
    """The ssh_config changed between reading it and starting the master: the
    master would not have been what its socket is named after. Nothing started."""


class MasterNotOurs(MuxError):
    """The control socket belongs to another user (its file or the process behind it);
    nothing was sent to it, and it was not removed."""

    def __init__(self, path: str, uid: int, who: str) -> None:
        self.path = path
        self.uid = uid
        super().__init__(
            f"the control socket {path} belongs to {who}, not to us: refusing to use it "
            "(nothing was sent). Another user could read every command and secret sent "
            "there: remove it, or use a mux.control_dir that only you can write"
        )


class UserMasterLeftAlone(MuxError, PermissionError):
    """Asked to stop a master at the user's own control path (their ssh_config
    names it): fabric-mux never stops what is the user's; nothing was done."""


class ServesAnotherRoute(MuxError):
    """The master at a control path that several routes can name (the user's
    ControlPath, ``mux.control_path``) connects elsewhere than this route, or
    where it connects cannot be told: it is not used for this route."""

    def __init__(self, path: str, serves: str) -> None:
        self.path = path
        #: What the master connects to, as the warning says it.
        self.serves = serves
        super().__init__(f"the master at {path} {serves}")


class StartWaitTimedOut(MuxError, socket.timeout):
    """Another thread or process has been starting the same master for longer than
    fabric-mux waits (``LOCK_WAIT``); nothing was started."""

    os_errno = errno.ETIMEDOUT


class EnvNotSent(MuxError, ValueError):
    """``env`` for a command that the master cannot pass on: the user's own master,
    whose SendEnv does not name the variables (``inline_ssh_env`` off).
    Nothing ran."""


class MuxProtocolError(MuxError, SSHException):  # type: ignore[misc]
    """The master answered something the multiplexing protocol does not allow."""


class MasterUnavailable(MuxError, SSHException):  # type: ignore[misc]
    """Nothing answers on the control socket: no master, or a stale socket."""


class RequestDenied(MuxError, SSHException):  # type: ignore[misc]
    """The master answered a request with ``MUX_S_FAILURE`` or ``PERMISSION_DENIED``."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class MasterNotResponding(MuxError, socket.timeout):
    """The master, or the server behind it, did not answer within ``mux.reply_timeout``.

    The master is left alone (it may be stopped, or its server frozen): it is
    neither replaced by a second one nor killed.
    """

    os_errno = errno.ETIMEDOUT
    #: The master's pid, when the kernel told it.
    pid: int | None = None


class SessionRefused(MuxError, ChannelException):  # type: ignore[misc]
    """The master refused a session (for instance sshd's ``MaxSessions``)."""

    def __init__(self, host: str, reason: str) -> None:
        self.host = host
        self.reason = reason
        # paramiko's ChannelException fields: "resource shortage", its words.
        self.code = 4
        self.text = reason
        super().__init__(f"{host}: the master refused a session: {reason}")


class ForwardFailed(MuxError, OSError):
    """The master could not set up a port forward (e.g. the port is in use)."""


class BadForward(ForwardFailed, ValueError):
    """A forward's arguments cannot be a forward (a port outside 1-65535)."""


class MasterLost(MuxError, SSHException):  # type: ignore[misc]
    """The master went away while a session was running."""


class _SaidByFab(MuxError, Exit):
    """A :class:`MuxError` that ``fab`` reports as it reports invoke's ``Exit``: it
    prints ``message`` on one line and exits 1.

    Like every :class:`MuxError`, ``str()`` is the bare reason: whoever prints it
    says whose it is (``fabric-mux: ...``), once. invoke's ``Program`` is such a
    printer, and it prints an ``Exit``'s ``message`` as it is: so ``message`` is
    the line it prints, and ``reason`` the bare text.
    """

    reason: str

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self._code = 1  # Exit's: what fab exits with

    @property
    def message(self) -> str:
        return f"fabric-mux: {self.reason}"

    @message.setter
    def message(self, value: str) -> None:
        self.reason = value

    def __str__(self) -> str:
        return self.reason

    def _init_stock(self) -> None:
        Exception.__init__(self, self.reason)


class EmptyHostList(_SaidByFab, TypeError):
    """A run whose hosts name no host at all (``-H ""``, ``-H ,``, ``-H @FILE`` of
    comments, a blank name among a task's hosts, ``deploy@`` or ``:22``): never a
    run on this machine, as Fabric makes of a run with no host. ``fab`` prints one
    line and exits 1. Also what a connection given no host raises (a
    ``TypeError``, as Fabric's raises there)."""


class BadConfig(_SaidByFab, ValueError):
    """A ``mux`` setting of the wrong kind (``persist: "ten minutes"``); the message
    names the key and what it takes. A ``ValueError``, and to ``fab`` an ``Exit``:
    one line, exit 1."""


class BadHostList(_SaidByFab, ValueError):
    """A host range that names no hosts as written (``web[a-c]``, ``web[3-1]``); the
    message names it. A ``ValueError``, and to ``fab`` an ``Exit``: one line, exit 1."""


class HostListUnsafe(_SaidByFab):
    """A host file (``-H @FILE``) that another user could have written: the file, a
    folder on its way, or a link is not yours (or root's) alone. Nothing is read;
    ``fab`` prints one line and exits 1."""


class RunInterrupted(MuxError):
    """Ctrl-C stopped a parallel run: a host's task ended before its next command."""


class TransferNeedsSftp(MuxError):
    """The remote account ran no shell for a transfer (``ForceCommand internal-sftp``):
    it is done over SFTP instead. Raised and handled inside ``put``/``get``."""


class OutOfDescriptors(MuxError, OSError):
    """No file descriptor left for a session's pipes (``ulimit -n``)."""

    os_errno = errno.EMFILE


class MasterStartFailed(MuxError, SSHException):  # type: ignore[misc]
    """``ssh`` could not start a master; carries its argv, exit code and stderr.

    ``note``, when given, is a line of advice after ssh's own words.
    """

    what = "could not start an SSH master"

    def __init__(
        self,
        host: str,
        argv: Sequence[str],
        exit_code: int | None,
        stderr: str,
        note: str = "",
    ) -> None:
        self.host = host
        self.argv = list(argv)
        self.exit_code = exit_code
        self.stderr = stderr
        self.note = note or self.default_note(stderr)
        said = stderr.strip() or "(ssh printed nothing)"
        advice = f"\n({self.note})" if self.note else ""
        super().__init__(f"{host}: {self.what} (ssh exit {exit_code}): {said}{advice}")

    @classmethod
    def default_note(cls, stderr: str) -> str:
        return ""


class ConnectFailed(MasterStartFailed):
    """No SSH connection: the host is unknown, unreachable, refused or hung up."""

    what = "could not connect"


class UnknownHost(ConnectFailed, socket.gaierror):
    """The host name does not resolve (stock Fabric: ``socket.gaierror``)."""

    os_errno = socket.EAI_NONAME


class ServerUnreachable(ConnectFailed, NoValidConnectionsError):  # type: ignore[misc]
    """Refused, or no route (stock Fabric: paramiko's ``NoValidConnectionsError``)."""

    errors: ClassVar[dict[tuple[str, int], Exception]] = {}


class ConnectTimedOut(ConnectFailed, socket.timeout):
    """No answer within ConnectTimeout (stock Fabric: ``socket.timeout``)."""

    os_errno = errno.ETIMEDOUT


class AuthenticationFailed(MasterStartFailed, AuthenticationException):  # type: ignore[misc]
    """The server rejected every credential offered."""

    what = "authentication failed"


class HostKeyFailed(MasterStartFailed):
    """The host key is unknown or changed; host-key checking is never weakened."""

    what = "host key verification failed"

    @classmethod
    def default_note(cls, stderr: str) -> str:
        if "IDENTIFICATION HAS CHANGED" in stderr:
            return (
                "the server's key is not the one in known_hosts; if the change is expected, "
                "remove the old key with ssh-keygen -R HOST"
            )
        return (
            "the server's key is not in known_hosts and nobody could be asked: connect once "
            "with plain ssh to accept it, or set StrictHostKeyChecking accept-new for it"
        )


class BadSshOption(MasterStartFailed):
    """ssh rejected an option or the ssh_config it was given (or the host name or
    port it was asked for: ``ssh -G`` refused them before any connection)."""

    what = "ssh rejected its configuration"


# Ordered: the first marker found in ssh's stderr decides the class. Host-key
# messages come first: a changed key's warning banner mentions other things too.
_MARKERS: list[tuple[str, type[MasterStartFailed]]] = [
    ("Host key verification failed", HostKeyFailed),
    ("REMOTE HOST IDENTIFICATION HAS CHANGED", HostKeyFailed),
    ("Permission denied", AuthenticationFailed),
    ("Too many authentication failures", AuthenticationFailed),
    ("Bad configuration option", BadSshOption),
    ("command-line: line", BadSshOption),
    ("Missing argument", BadSshOption),
    ("Unsupported option", BadSshOption),
    ("Could not resolve hostname", UnknownHost),
    ("Connection refused", ServerUnreachable),
    ("No route to host", ServerUnreachable),
    ("Network is unreachable", ServerUnreachable),
    ("Connection timed out", ConnectTimedOut),
    ("Operation timed out", ConnectTimedOut),
    ("Connection closed by", ConnectFailed),
    ("Connection reset by", ConnectFailed),
    ("kex_exchange_identification", ConnectFailed),
]


def classify_ssh_failure(
    host: str,
    argv: Sequence[str],
    exit_code: int | None,
    stderr: str,
    note: str = "",
    otherwise: type[MasterStartFailed] = MasterStartFailed,
) -> MasterStartFailed:
    """Turn a failed ``ssh`` run into the most specific exception its stderr
    supports; ``otherwise`` where none says more."""
    for marker, cls in _MARKERS:
        if marker in stderr:
            return cls(host, argv, exit_code, stderr, note)
    return otherwise(host, argv, exit_code, stderr, note)


@contextlib.contextmanager
def descriptor_errors(what: str) -> Iterator[None]:
    """Turn running out of file descriptors while making ``what`` into :class:`OutOfDescriptors`."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in (errno.EMFILE, errno.ENFILE):
            raise
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        raise OutOfDescriptors(
            f"no file descriptor left for {what} ({exc.strerror}; ulimit -n is {soft}): "
            "close connections or sessions you no longer need, or raise the limit"
        ) from None
