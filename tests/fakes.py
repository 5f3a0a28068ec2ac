"""Hostile peers for the trust tests: servers that log what a client sends them."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import paramiko

__all__ = ["FakeSshServer", "fake_ssh_server"]


class _Interface(paramiko.ServerInterface):  # type: ignore[misc]
    def __init__(self, fake: FakeSshServer) -> None:
        self.fake = fake

    def get_allowed_auths(self, username: str) -> str:
        return self.fake.method

    def check_auth_password(self, username: str, password: str) -> int:
        self.fake.received.append(("password", username, password))
        return int(paramiko.AUTH_FAILED)

    def check_auth_interactive(self, username: str, submethods: str) -> paramiko.InteractiveQuery:
        query = paramiko.InteractiveQuery("", "")
        query.add_prompt(self.fake.question, False)
        return query

    def check_auth_interactive_response(self, responses: list[str]) -> int:
        for response in responses:
            self.fake.received.append(("keyboard-interactive", "", response))
        return int(paramiko.AUTH_FAILED)


class FakeSshServer:
    """An SSH server on 127.0.0.1 that lets nobody in and keeps every answer it got.

    :ivar method: the one authentication method it offers.
    :ivar question: what it asks by keyboard-interactive.
    :ivar received: ``(method, user, answer)`` for each answer it was sent.
    """

    def __init__(self, host_key: paramiko.PKey, method: str, question: str) -> None:
        self.host_key = host_key
        self.method = method
        self.question = question
        self.received: list[tuple[str, str, str]] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._transports: list[paramiko.Transport] = []

    def known_hosts_line(self) -> str:
        key = self.host_key
        return f"[127.0.0.1]:{self.port} {key.get_name()} {key.get_base64()}\n"

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            transport = paramiko.Transport(conn)
            transport.add_server_key(self.host_key)
            self._transports.append(transport)
            try:
                transport.start_server(server=_Interface(self))
            except (paramiko.SSHException, EOFError, OSError):
                transport.close()

    def close(self) -> None:
        self._listener.close()
        for transport in self._transports:
            transport.close()


@contextmanager
def fake_ssh_server(
    *, method: str = "password", question: str = "Password: "
) -> Iterator[FakeSshServer]:
    """Run a :class:`FakeSshServer` until the block ends."""
    server = FakeSshServer(paramiko.ECDSAKey.generate(), method, question)
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.close()
        thread.join(5)
