"""Unit tests of the mux protocol client against a scripted peer on a UNIX socket.

The real master is exercised by the integration tests; here a peer sends
exactly the replies whose handling is being decided.
"""

from __future__ import annotations

import os
import socket
import struct
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fabric_mux.exceptions import MasterUnavailable, MuxProtocolError, RequestDenied
from fabric_mux.protocol import (
    C_NEW_SESSION,
    MSG_HELLO,
    S_EXIT_MESSAGE,
    S_FAILURE,
    S_SESSION_OPENED,
    S_TTY_ALLOC_FAIL,
    MuxClient,
)

Script = Callable[[socket.socket], None]


def packet(msg_type: int, *fields: int | bytes) -> bytes:
    body = struct.pack(">I", msg_type)
    for field in fields:
        body += (
            struct.pack(">I", field)
            if isinstance(field, int)
            else struct.pack(">I", len(field)) + field
        )
    return struct.pack(">I", len(body)) + body


def read_packet(conn: socket.socket) -> bytes:
    (length,) = struct.unpack(">I", conn.recv(4, socket.MSG_WAITALL))
    return conn.recv(length, socket.MSG_WAITALL)


@pytest.fixture
def peer() -> Iterator[Callable[[Script], str]]:
    folder = tempfile.mkdtemp(prefix="fmp-", dir="/tmp")
    threads: list[threading.Thread] = []

    def start(script: Script) -> str:
        path = os.path.join(folder, f"s{len(threads)}")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(1)

        def serve() -> None:
            conn, _ = listener.accept()
            with conn, listener:
                script(conn)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        threads.append(thread)
        return path

    yield start
    for thread in threads:
        thread.join(5)
    for name in os.listdir(folder):
        os.unlink(os.path.join(folder, name))
    os.rmdir(folder)


def hello(conn: socket.socket, version: int = 4) -> None:
    conn.sendall(packet(MSG_HELLO, version))
    assert read_packet(conn)[:8] == struct.pack(">II", MSG_HELLO, 4)


def session_opened(conn: socket.socket) -> None:
    hello(conn)
    request = read_packet(conn)
    assert struct.unpack(">I", request[:4])[0] == C_NEW_SESSION
    for _ in range(3):
        msg, fds, _flags, _addr = socket.recv_fds(conn, 1, 1)
        assert msg == b"\0" and len(fds) == 1
        os.close(fds[0])
    request_id = struct.unpack(">I", request[4:8])[0]
    conn.sendall(packet(S_SESSION_OPENED, request_id, 7))


def open_session(path: str) -> MuxClient:
    client = MuxClient(path, timeout=5)
    r, w = os.pipe()
    try:
        client.open_session("true", (r, w, w))
    finally:
        os.close(r)
        os.close(w)
    return client


def test_missing_socket_is_master_unavailable(tmp_path: Path) -> None:
    with pytest.raises(MasterUnavailable):
        MuxClient(str(tmp_path / "nothing"))


def test_stale_socket_is_master_unavailable() -> None:
    folder = tempfile.mkdtemp(prefix="fmp-", dir="/tmp")
    path = os.path.join(folder, "stale")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)  # bound, never listening: what a killed master leaves
    try:
        with pytest.raises(MasterUnavailable):
            MuxClient(path)
    finally:
        sock.close()
        os.unlink(path)
        os.rmdir(folder)


def test_other_protocol_version_is_refused(peer: Callable[[Script], str]) -> None:
    path = peer(lambda conn: conn.sendall(packet(MSG_HELLO, 3)))
    with pytest.raises(MuxProtocolError, match="protocol 3"):
        MuxClient(path)


def test_exit_message_gives_the_exit_code(peer: Callable[[Script], str]) -> None:
    def script(conn: socket.socket) -> None:
        session_opened(conn)
        conn.sendall(packet(S_TTY_ALLOC_FAIL, 7) + packet(S_EXIT_MESSAGE, 7, 42))

    client = open_session(peer(script))
    assert client.session_id == 7
    assert client.wait_exit() == 42
    assert client.tty_alloc_failed
    client.close()


def test_end_without_exit_message_is_none(peer: Callable[[Script], str]) -> None:
    client = open_session(peer(session_opened))
    assert client.wait_exit() is None
    client.close()


def test_refusal_carries_the_masters_reason(peer: Callable[[Script], str]) -> None:
    def script(conn: socket.socket) -> None:
        hello(conn)
        request = read_packet(conn)
        for _ in range(3):
            socket.recv_fds(conn, 1, 1)
        conn.sendall(
            packet(S_FAILURE, struct.unpack(">I", request[4:8])[0], b"Session open refused by peer")
        )

    with pytest.raises(RequestDenied, match="Session open refused by peer"):
        open_session(peer(script))
