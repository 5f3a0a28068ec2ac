"""SFTP through the master: paramiko's ``SFTPClient`` over a subsystem session.

paramiko's client speaks SFTP over one end of a socketpair whose other end is
the stdin and stdout of an ``sftp`` subsystem session. ``put``/``get`` do not
use it (see :mod:`fabric_mux.transfer`); ``c.sftp()`` hands it to users for
everything else SFTP does.
"""

from __future__ import annotations

import os
import select
import socket

from paramiko import SFTPClient

from .exceptions import descriptor_errors
from .session import Session, SessionOpener

__all__ = ["SessionSocket", "open_sftp"]


class SessionSocket:
    """Our end of the socketpair, shaped as the channel paramiko's SFTP expects.

    Closing it ends the session; so does dropping it (the session's own rule).
    """

    def __init__(self, sock: socket.socket, name: str, session: Session) -> None:
        self._sock = sock
        self._name = name
        self._session = session

    def send(self, data: bytes) -> int:
        return self._sock.send(data)

    def recv(self, size: int) -> bytes:
        return self._sock.recv(size)

    def recv_ready(self) -> bool:
        ready, _, _ = select.select([self._sock], [], [], 0)
        return bool(ready)

    def get_name(self) -> str:
        return self._name

    def settimeout(self, timeout: float | None) -> None:
        self._sock.settimeout(timeout)

    def gettimeout(self) -> float | None:
        return self._sock.gettimeout()

    def setblocking(self, blocking: bool) -> None:
        self._sock.setblocking(blocking)

    def close(self) -> None:
        self._sock.close()
        self._session.close()


def open_sftp(opener: SessionOpener) -> SFTPClient:
    """An SFTP client on a new ``sftp`` subsystem session of ``opener``'s master."""
    with descriptor_errors("an SFTP session"):
        ours, theirs = socket.socketpair()
    try:
        with descriptor_errors("an SFTP session"):
            null = os.open(os.devnull, os.O_WRONLY)
        try:
            session = opener.open_session(
                "sftp", (theirs.fileno(), theirs.fileno(), null), subsystem=True
            )
        finally:
            os.close(null)
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    channel = SessionSocket(ours, f"sftp@{opener.original_host}", session)
    try:
        return SFTPClient(channel)
    except BaseException:
        channel.close()
        raise
