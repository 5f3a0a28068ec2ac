"""Port forwards opened on the master over the mux protocol, against a real sshd."""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator

import fabric
import pytest

from fabric_mux import MuxConnection
from fabric_mux.exceptions import ForwardFailed
from fabric_mux.testing import SshServer


class Greeter(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.sendall(b"hello from the service\n")


@pytest.fixture
def service() -> Iterator[int]:
    """A TCP service on 127.0.0.1; yields its port."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Greeter)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def read_from(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        return sock.makefile("rb").read()


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=10).close()
    except ConnectionRefusedError:
        return True
    return False


def test_local_forward_is_ready_at_once_and_gone_after(
    sshd: SshServer, config: fabric.Config, service: int
) -> None:
    c = MuxConnection(sshd.alias, config=config)
    port = free_port()
    with c.forward_local(port, service, "127.0.0.1", "127.0.0.1") as listening:
        assert listening == port
        assert read_from(port) == b"hello from the service\n"  # no wait needed
    assert refused(port)
    assert sshd.logins() == 1


def test_forward_is_cancelled_on_an_exception(
    sshd: SshServer, config: fabric.Config, service: int
) -> None:
    c = MuxConnection(sshd.alias, config=config)
    port = free_port()
    with pytest.raises(RuntimeError, match="inside"):
        with c.forward_local(port, service, "127.0.0.1", "127.0.0.1"):
            raise RuntimeError("inside")
    assert refused(port)


def test_busy_local_port_fails_at_once(
    sshd: SshServer, config: fabric.Config, service: int
) -> None:
    c = MuxConnection(sshd.alias, config=config)
    entered = False
    with pytest.raises(ForwardFailed, match=f"127.0.0.1:{service}"):
        with c.forward_local(service, 22, "127.0.0.1", "127.0.0.1"):
            entered = True
    assert not entered


def test_nested_identical_forwards_keep_working(
    sshd: SshServer, config: fabric.Config, service: int
) -> None:
    c = MuxConnection(sshd.alias, config=config)
    other = MuxConnection(sshd.alias, config=config)
    port = free_port()
    with c.forward_local(port, service, "127.0.0.1", "127.0.0.1"):
        with other.forward_local(port, service, "127.0.0.1", "127.0.0.1"):
            pass
        assert read_from(port) == b"hello from the service\n"
    assert refused(port)


def test_remote_forward_with_a_chosen_port(
    sshd: SshServer, config: fabric.Config, service: int
) -> None:
    c = MuxConnection(sshd.alias, config=config)
    with c.forward_remote(0, service, "127.0.0.1", "127.0.0.1") as remote_port:
        assert remote_port > 0
        result = c.run(f"exec 3<>/dev/tcp/127.0.0.1/{remote_port}; cat <&3", hide=True)
        assert result.stdout == "hello from the service\n"
    after = c.run(f"exec 3<>/dev/tcp/127.0.0.1/{remote_port}", hide=True, warn=True)
    assert after.exited != 0
    assert sshd.logins() == 1
