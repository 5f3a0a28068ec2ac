"""A client for OpenSSH's connection-multiplexing protocol (PROTOCOL.mux, version 4).

One :class:`MuxClient` is one connection to a master's control socket. A
passenger session needs a control connection of its own for its whole life:
closing that connection ends the session. Nothing here knows about Fabric.
"""

from __future__ import annotations

import itertools
import os
import socket
import struct
from collections import Counter
from collections.abc import Sequence

from .exceptions import (
    MasterNotOurs,
    MasterNotResponding,
    MasterUnavailable,
    MuxProtocolError,
    RequestDenied,
    descriptor_errors,
)
from .peers import peer_credentials, user_name

__all__ = ["FWD_DYNAMIC", "FWD_LOCAL", "FWD_REMOTE", "MuxClient", "SessionInterrupted"]

PROTOCOL_VERSION = 4

MSG_HELLO = 0x00000001
C_NEW_SESSION = 0x10000002
C_ALIVE_CHECK = 0x10000004
C_TERMINATE = 0x10000005
C_OPEN_FWD = 0x10000006
C_CLOSE_FWD = 0x10000007
C_STOP_LISTENING = 0x10000009
S_OK = 0x80000001
S_PERMISSION_DENIED = 0x80000002
S_FAILURE = 0x80000003
S_EXIT_MESSAGE = 0x80000004
S_ALIVE = 0x80000005
S_SESSION_OPENED = 0x80000006
S_REMOTE_PORT = 0x80000007
S_TTY_ALLOC_FAIL = 0x80000008

_REQUEST_NAMES = {
    C_NEW_SESSION: "new session",
    C_ALIVE_CHECK: "alive check",
    C_TERMINATE: "terminate",
    C_OPEN_FWD: "open forward",
    C_CLOSE_FWD: "close forward",
    C_STOP_LISTENING: "stop listening",
}

FWD_LOCAL = 1
FWD_REMOTE = 2
FWD_DYNAMIC = 3

NO_ESCAPE_CHAR = 0xFFFFFFFF
_MAX_PACKET = 256 * 1024
_UINT32 = struct.Struct(">I")


def _check_owner(path: str) -> None:
    """Refuse a socket file that another user made, live or stale: it is not ours
    to talk to, nor to remove and replace."""
    try:
        uid = os.lstat(path).st_uid
    except OSError:
        return  # nothing there: connecting says so
    if uid != os.geteuid():
        raise MasterNotOurs(path, uid, user_name(uid))


class _Reader:
    """Reads SSH wire types from one packet body."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def uint32(self) -> int:
        end = self._pos + 4
        if end > len(self._data):
            raise MuxProtocolError("truncated packet from the master")
        (value,) = _UINT32.unpack_from(self._data, self._pos)
        self._pos = end
        return int(value)

    def string(self) -> str:
        length = self.uint32()
        end = self._pos + length
        if end > len(self._data):
            raise MuxProtocolError("truncated string from the master")
        value = self._data[self._pos : end]
        self._pos = end
        return value.decode("utf-8", "replace")


def _uint32(value: int) -> bytes:
    return _UINT32.pack(value & 0xFFFFFFFF)


def _string(value: str | bytes) -> bytes:
    data = value.encode("utf-8") if isinstance(value, str) else value
    return _UINT32.pack(len(data)) + data


class SessionInterrupted(KeyboardInterrupt):
    """Ctrl-C once the master had a new session's request and its descriptors:
    the master runs the command whether or not its answer is taken, and the mux
    protocol has no message to stop it."""


class MuxClient:
    """One control connection to the master listening on ``path``.

    :param timeout: seconds to wait for the master's reply to a request; the
        wait for a session's end (:meth:`wait_exit`) is not bounded by it.
    :raises MasterUnavailable: when nothing listens on ``path``.
    """

    def __init__(
        self,
        path: str,
        timeout: float | None = 30.0,
        label: str = "",
        counter: Counter[str] | None = None,
    ) -> None:
        self.path = path
        self.timeout = timeout
        #: Counts each request sent, by kind ("new session", "alive check"...).
        self.counter = counter
        #: Who the master serves, for messages (a host name).
        self.label = label
        self.session_id: int | None = None
        #: Set when the master reported that the remote side could not allocate a tty.
        self.tty_alloc_failed = False
        self._ids = itertools.count(1)
        self._waiting_for = "its hello"
        _check_owner(path)
        with descriptor_errors("a control connection"):
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            self._sock.close()
            raise MasterUnavailable(f"no master listens on {path}: {exc.strerror}") from None
        except socket.timeout:
            self._sock.close()
            raise self._not_responding() from None
        except OSError:
            self._sock.close()
            raise
        try:
            self._check_peer()
            self._hello()
        except BaseException:
            self.close()
            raise

    # -- wire ------------------------------------------------------------

    def fileno(self) -> int:
        return self._sock.fileno()

    def shutdown(self) -> None:
        """End the conversation (safe while another thread waits on it); the session ends."""
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self) -> None:
        """Close the control connection; a running session ends with it."""
        self.shutdown()
        self._sock.close()

    def forget(self) -> None:
        """Close our descriptor only (a forked child's copy): the connection, and any
        session on it, stays the other process's."""
        self._sock.close()

    def _send(self, msg_type: int, body: bytes) -> None:
        payload = _uint32(msg_type) + body
        try:
            self._sock.sendall(_uint32(len(payload)) + payload)
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise MasterUnavailable(f"the master on {self.path} went away: {exc}") from None

    def _not_responding(self) -> MasterNotResponding:
        who = f"{self.label}: " if self.label else ""
        return MasterNotResponding(
            f"{who}the master on {self.path} did not answer {self._waiting_for} "
            f"within {self.timeout:g} s"
        )

    def _recv_exact(self, size: int) -> bytes | None:
        chunks = []
        while size:
            try:
                chunk = self._sock.recv(size)
            except ConnectionResetError:
                chunk = b""  # a master exiting under us: the same as its end of stream
            except socket.timeout:
                raise self._not_responding() from None
            if not chunk:
                return None
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)

    def _recv(self) -> tuple[int, _Reader] | None:
        """The next packet as (type, body reader), or None at end of stream."""
        header = self._recv_exact(4)
        if header is None:
            return None
        (length,) = _UINT32.unpack(header)
        if not 4 <= length <= _MAX_PACKET:
            raise MuxProtocolError(f"bad packet length {length} from the master")
        payload = self._recv_exact(length)
        if payload is None:
            return None
        reader = _Reader(payload)
        return reader.uint32(), reader

    def _check_peer(self) -> None:
        """Refuse, before a byte is sent, a master that does not run as us."""
        try:
            peer = peer_credentials(self._sock)
        except OSError as exc:
            raise MasterNotOurs(self.path, -1, f"a process we cannot identify ({exc})") from None
        if peer.uid != os.geteuid():
            raise MasterNotOurs(self.path, peer.uid, user_name(peer.uid))

    def _hello(self) -> None:
        packet = self._recv()
        if packet is None:
            raise MasterUnavailable(f"the master on {self.path} closed the connection")
        msg_type, body = packet
        if msg_type != MSG_HELLO:
            raise MuxProtocolError(f"expected a hello from the master, got 0x{msg_type:08x}")
        version = body.uint32()
        if version != PROTOCOL_VERSION:
            raise MuxProtocolError(f"the master speaks mux protocol {version}, not 4")
        self._send(MSG_HELLO, _uint32(PROTOCOL_VERSION))

    def _request(self, msg_type: int, body: bytes = b"", what: str = "a request") -> int:
        self._waiting_for = what
        if self.counter is not None:
            self.counter[_REQUEST_NAMES.get(msg_type, what)] += 1
        request_id = next(self._ids)
        self._send(msg_type, _uint32(request_id) + body)
        return request_id

    def _reply(self, request_id: int) -> tuple[int, _Reader]:
        """The reply to ``request_id``; failures become :class:`RequestDenied`."""
        packet = self._recv()
        if packet is None:
            raise MasterUnavailable(f"the master on {self.path} closed the connection")
        msg_type, body = packet
        if body.uint32() != request_id:
            raise MuxProtocolError("the master answered another request")
        if msg_type in (S_FAILURE, S_PERMISSION_DENIED):
            raise RequestDenied(body.string())
        return msg_type, body

    # -- requests --------------------------------------------------------

    def alive_check(self) -> int:
        """The master's pid."""
        msg_type, body = self._reply(self._request(C_ALIVE_CHECK, what="an alive check"))
        if msg_type != S_ALIVE:
            raise MuxProtocolError(f"unexpected reply 0x{msg_type:08x} to an alive check")
        return body.uint32()

    def terminate(self) -> None:
        """Ask the master to exit now; its running sessions end too."""
        self._reply(self._request(C_TERMINATE, what="a request to exit"))

    def stop_listening(self) -> None:
        """Ask the master to remove its socket; running sessions finish first."""
        self._reply(self._request(C_STOP_LISTENING, what="a request to stop"))

    def open_session(
        self,
        command: str,
        fds: Sequence[int],
        *,
        tty: bool = False,
        term: str = "",
        subsystem: bool = False,
        agent: bool = False,
        env: Sequence[str] = (),
    ) -> int:
        """Start a passenger session whose stdin, stdout and stderr are ``fds``.

        Returns the session id once the server has opened the channel. The
        master keeps its own copies of ``fds``: the caller may close its copies
        as soon as this returns.
        """
        if len(fds) != 3:
            raise ValueError("a session needs exactly three descriptors")
        body = b"".join(
            [
                _string(""),  # reserved
                _uint32(tty),
                _uint32(0),  # X11 forwarding
                _uint32(agent),
                _uint32(subsystem),
                _uint32(NO_ESCAPE_CHAR),
                _string(term),
                _string(command),
                *(_string(item) for item in env),
            ]
        )
        request_id = self._request(C_NEW_SESSION, body, what="a new session request")
        # The master reads each descriptor with its own one-byte message.
        for fd in fds:
            socket.send_fds(self._sock, [b"\0"], [fd])
        try:
            msg_type, reply = self._reply(request_id)
        except KeyboardInterrupt as interrupt:
            raise SessionInterrupted(*interrupt.args).with_traceback(
                interrupt.__traceback__
            ) from None
        if msg_type != S_SESSION_OPENED:
            raise MuxProtocolError(f"unexpected reply 0x{msg_type:08x} to a new session")
        self.session_id = reply.uint32()
        return self.session_id

    def wait_exit(self) -> int | None:
        """Block until the session ends: its exit status, or None if none came.

        None means the session ended with no exit message: the remote process
        was killed by a signal, or the master lost its connection.
        """
        self._sock.settimeout(None)
        while True:
            try:
                packet = self._recv()
            except OSError:
                return None
            if packet is None:
                return None
            msg_type, body = packet
            if msg_type == S_TTY_ALLOC_FAIL:
                self.tty_alloc_failed = True
            elif msg_type == S_EXIT_MESSAGE:
                body.uint32()  # session id
                return body.uint32()
            else:
                raise MuxProtocolError(f"unexpected message 0x{msg_type:08x} in a session")

    def open_forward(
        self, kind: int, listen_host: str, listen_port: int, connect_host: str, connect_port: int
    ) -> int | None:
        """Ask the master to forward a port; a remote port 0 returns the port chosen."""
        msg_type, body = self._reply(
            self._request(
                C_OPEN_FWD,
                _forward_spec(kind, listen_host, listen_port, connect_host, connect_port),
                what="a forward request",
            )
        )
        return body.uint32() if msg_type == S_REMOTE_PORT else None

    def close_forward(
        self, kind: int, listen_host: str, listen_port: int, connect_host: str, connect_port: int
    ) -> None:
        """Cancel a forward opened with the same arguments."""
        self._reply(
            self._request(
                C_CLOSE_FWD,
                _forward_spec(kind, listen_host, listen_port, connect_host, connect_port),
                what="a request to cancel a forward",
            )
        )


def _forward_spec(
    kind: int, listen_host: str, listen_port: int, connect_host: str, connect_port: int
) -> bytes:
    return b"".join(
        [
            _uint32(kind),
            _string(listen_host),
            _uint32(listen_port),
            _string(connect_host),
            _uint32(connect_port),
        ]
    )
