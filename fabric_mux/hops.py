"""Hops: ProxyJump values parsed as OpenSSH parses them, and the ProxyCommand that
goes through a hop's master.

Plain OpenSSH ProxyJump would make every target's master log in to the bastion
again (its inner ``ssh -W`` is a fresh client). Here each hop has a master of its
own, and a target's master is given ``ProxyCommand ssh -S HOP_SOCKET -W %h:%p
hop``, a stdio forward on the hop's master, so one bastion login serves every
host behind it. Pure functions, but for :func:`telling_what_the_hop_said`, which
reads what a hop's ProxyCommand wrote to its errors file.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
from collections.abc import Iterator
from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import unquote

from .argv import control_socket_name
from .exceptions import MasterStartFailed

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "JumpHop",
    "hop_errors",
    "jump_hops",
    "proxy_command",
    "telling_what_the_hop_said",
    "without_log",
]


class JumpHop(NamedTuple):
    """One hop of a ProxyJump value."""

    host: str
    user: str | None = None
    port: int | None = None


def jump_hops(proxyjump: str) -> list[JumpHop]:
    """The hops of a ProxyJump value, first hop first, parsed as OpenSSH parses them.

    Each is ``[user@]host[:port]`` or ``ssh://[user@]host[:port][/]``; a host
    may be bracketed (``[::1]``, and ``ssh -G`` writes ``user@[10.0.0.5]:22``
    for any address). ``none`` means no hop.

    :raises ValueError: for a hop OpenSSH would refuse too.
    """
    if proxyjump.strip().lower() == "none":
        return []
    return [_jump_hop(item.strip()) for item in proxyjump.split(",") if item.strip()]


def _jump_hop(text: str) -> JumpHop:
    uri = text.startswith("ssh://")
    rest = text[len("ssh://") :] if uri else text
    user: str | None = None
    if "@" in rest:
        # A URI's user comes before its first @ (and may be %-encoded); a plain
        # hop's before its last.
        index = rest.index("@") if uri else rest.rindex("@")
        user, rest = rest[:index], rest[index + 1 :]
        if uri:
            user = unquote(user.split(";", 1)[0])
        if not user:
            raise ValueError(f"ProxyJump {text!r}: an empty user name")
    if rest.startswith("["):
        end = rest.find("]")
        if end < 0:
            raise ValueError(f"ProxyJump {text!r}: no ] after [")
        host, rest = rest[1:end], rest[end + 1 :]
    else:
        cut = min((i for i in (rest.find(":"), rest.find("/")) if i >= 0), default=len(rest))
        host, rest = rest[:cut], rest[cut:]
    port: int | None = None
    if rest.startswith(":"):
        digits = rest[1:].split("/", 1)[0]
        # ASCII digits: isdigit() takes superscripts, which int() refuses.
        if not digits.isascii() or not digits.isdigit() or not 0 < int(digits) < 65536:
            raise ValueError(f"ProxyJump {text!r}: bad port {digits!r}")
        port = int(digits)
        rest = rest[1 + len(digits) :]
    if not host or (rest and not (uri and rest.startswith("/"))):
        raise ValueError(f"ProxyJump {text!r} is not [user@]host[:port]")
    return JumpHop(host, user, port)


def proxy_command(ssh: str, hop: str, hop_control_path: str, errors: str) -> str:
    """The ProxyCommand that reaches ``%h:%p`` through the master of ``hop``.

    OpenSSH expands ``%h``/``%p`` to the target's own HostName and Port
    (bracketed, as OpenSSH's own ProxyJump does, so IPv6 addresses work). The
    client reads no ssh_config and has ``ProxyCommand=false``: if the hop's
    master is gone it fails, instead of quietly logging in to the hop again.
    Its log level is set because ``-W`` is quiet by default. Its messages are
    appended to ``errors`` (ssh sends a ProxyCommand's stderr to /dev/null
    under ControlPersist, and that is where a refusal says which hop failed).
    """

    def quoted(text: str) -> str:
        # Runs through the user's shell, after ssh's own %-expansion.
        return shlex.quote(text).replace("%", "%%")

    return (
        f"{quoted(ssh)} -F /dev/null -o ControlMaster=no -o ProxyCommand=false "
        f"-o LogLevel=ERROR -S {quoted(hop_control_path)} -W '[%h]:%p' {quoted(hop)} "
        f"2>>{quoted(errors)}"
    )


#: The end of :func:`proxy_command`'s command: where its errors go.
_LOG = re.compile(r" 2>>(?:'[^']*'|[^ ']+)$")


def without_log(command: str) -> str:
    """``command`` without :func:`proxy_command`'s log file: two ProxyCommands
    through one hop's master that only log elsewhere (another control folder)
    take the same way."""
    if " -W '[%h]:%p' " in command and "-o ProxyCommand=false" in command:
        return _LOG.sub("", command)
    return command


def hop_errors(folder: Path, hop_path: str, user: str, hostname: str, port: str) -> str:
    """Where the ProxyCommand through the hop's master at ``hop_path`` writes its
    errors for a route that lands at ``user@hostname:port``: a file of ours (0600)
    in our private ``folder``, named after the hop and where the route lands (not
    after the alias or a timeout: the file is in the master's command line, and so
    in what its socket is named after)."""
    name = control_socket_name(f"{hop_path}\n{user}@{hostname}:{port}")
    return str(folder / f"{name}.err")


@contextlib.contextmanager
def telling_what_the_hop_said(errors: str, host: str) -> Iterator[None]:
    """Run a start through a hop's master whose ProxyCommand writes its errors to
    ``errors`` (see :func:`proxy_command`): a :class:`~fabric_mux.exceptions.MasterStartFailed`
    inside names ``host`` and says what the hop said meanwhile. The file is removed after.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(errors, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)  # one an older fabric-mux left
        offset = os.fstat(fd).st_size
    finally:
        os.close(fd)
    try:
        yield
    except MasterStartFailed as exc:
        # The hop's own master is up, so it let us in: what failed is the
        # way on from it to this host, and the forward's error says why.
        try:
            with open(errors, "rb") as log_file:
                log_file.seek(offset)
                said = log_file.read().decode("utf-8", "replace")
        except FileNotFoundError:
            said = ""
        raise type(exc)(host, exc.argv, exc.exit_code, said + exc.stderr, exc.note) from None
    finally:
        # The forward keeps writing to it while it runs; nobody reads it after.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(errors)
