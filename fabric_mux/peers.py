"""Who is at the other end of a UNIX socket: the kernel's word, not the peer's.

Used before trusting a control socket (is the master ours?) and an askpass
connection (is it the master's own ssh asking?).
"""

from __future__ import annotations

import os
import pwd
import socket
import struct
from typing import NamedTuple

__all__ = [
    "PeerCredentials",
    "parent_pid",
    "peer_credentials",
    "processes_with_argument",
    "user_name",
]

_UCRED = struct.Struct("3i")


class PeerCredentials(NamedTuple):
    pid: int
    uid: int
    gid: int


def peer_credentials(sock: socket.socket) -> PeerCredentials:
    """The pid, uid and gid of the process that connected (or listens on) ``sock``.

    :raises OSError: where the platform cannot say (no ``SO_PEERCRED``).
    """
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        raise OSError("this platform cannot tell who is at the other end of a UNIX socket")
    pid, uid, gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, option, _UCRED.size))
    return PeerCredentials(pid, uid, gid)


def parent_pid(pid: int) -> int | None:
    """The parent of process ``pid``; None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            text = stat.read().decode("ascii", "replace")
    except OSError:
        return None
    # The command name in parentheses may hold spaces and parentheses itself.
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1])


def user_name(uid: int) -> str:
    """``name (uid N)`` for messages; just the number if the account is unknown."""
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def processes_with_argument(argument: str, uid: int) -> list[int]:
    """Our (``uid``'s) running processes whose argv holds ``argument`` exactly."""
    wanted = argument.encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.stat(f"/proc/{name}").st_uid != uid:
                continue
            with open(f"/proc/{name}/cmdline", "rb") as cmdline:
                argv = cmdline.read().split(b"\0")
        except OSError:
            continue
        if wanted in argv:
            found.append(int(name))
    return found
