"""The package's exceptions: one root, :class:`MuxError`.

Remote command failures are not here: they stay invoke's ``UnexpectedExit``
so that ``warn=True`` and existing ``except`` clauses keep working.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "AuthenticationFailed",
    "BadSshOption",
    "ConnectFailed",
    "ControlDirUnsafe",
    "ForwardFailed",
    "HostKeyFailed",
    "MasterLost",
    "MasterNotOurs",
    "MasterStartFailed",
    "MuxError",
    "MuxProtocolError",
    "SessionRefused",
    "SshNotFound",
    "classify_ssh_failure",
]


class MuxError(Exception):
    """Root of every error fabric-mux raises itself."""


class SshNotFound(MuxError):
    """The ``ssh`` program named by ``mux.ssh_path`` is not there."""


class ControlDirUnsafe(MuxError):
    """The control folder is not private to this user; nothing was written into it."""


class MasterNotOurs(MuxError):
    """The control socket belongs to another user (its file or the process behind it);
    nothing was sent to it, and it was not removed."""

    def __init__(self, path: str, uid: int, who: str) -> None:
        super().__init__(
            f"the control socket {path} belongs to {who}, not to us: refusing to use it "
            "(nothing was sent). Another user could read every command and secret sent "
            "there: remove it, or use a mux.control_dir that only you can write"
        )
        self.path = path
        self.uid = uid


class MuxProtocolError(MuxError):
    """The master answered something the multiplexing protocol does not allow."""


class SessionRefused(MuxError):
    """The master refused a session (for instance sshd's ``MaxSessions``)."""

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(f"{host}: the master refused a session: {reason}")
        self.host = host
        self.reason = reason


class ForwardFailed(MuxError):
    """The master could not set up a port forward (e.g. the port is in use)."""


class MasterLost(MuxError):
    """The master went away while a session was running."""


class MasterStartFailed(MuxError):
    """``ssh`` could not start a master; carries its argv, exit code and stderr."""

    def __init__(self, host: str, argv: Sequence[str], exit_code: int | None, stderr: str) -> None:
        said = stderr.strip() or "(ssh printed nothing)"
        super().__init__(f"{host}: {self.what} (ssh exit {exit_code}): {said}")
        self.host = host
        self.argv = list(argv)
        self.exit_code = exit_code
        self.stderr = stderr

    what = "could not start an SSH master"


class ConnectFailed(MasterStartFailed):
    """No TCP connection: unknown host, refused port, timeout, no route."""

    what = "could not connect"


class AuthenticationFailed(MasterStartFailed):
    """The server rejected every credential offered."""

    what = "authentication failed"


class HostKeyFailed(MasterStartFailed):
    """The host key is unknown or changed; host-key checking is never weakened."""

    what = "host key verification failed"


class BadSshOption(MasterStartFailed):
    """ssh rejected an option or the ssh_config it was given."""

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
    ("Could not resolve hostname", ConnectFailed),
    ("Connection refused", ConnectFailed),
    ("Connection timed out", ConnectFailed),
    ("No route to host", ConnectFailed),
    ("Network is unreachable", ConnectFailed),
    ("Connection closed by", ConnectFailed),
    ("Connection reset by", ConnectFailed),
    ("kex_exchange_identification", ConnectFailed),
]


def classify_ssh_failure(
    host: str, argv: Sequence[str], exit_code: int | None, stderr: str
) -> MasterStartFailed:
    """Turn a failed ``ssh`` run into the most specific exception its stderr supports."""
    for marker, cls in _MARKERS:
        if marker in stderr:
            return cls(host, argv, exit_code, stderr)
    return MasterStartFailed(host, argv, exit_code, stderr)
