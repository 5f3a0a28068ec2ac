"""Round trips per operation, counted by a latency relay (turns of the conversation), not timed."""

from __future__ import annotations

import io
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import fabric
import pytest

from fabric_mux import MuxConnection
from fabric_mux.pytest_plugin import SshdFactory
from fabric_mux.relay import LatencyRelay
from fabric_mux.testing import SshServer

#: What a bare mux session costs through the master: the channel opens (one
#: round trip), the command runs and its status comes back (another).
BARE_SESSION = 2


@pytest.fixture
def echo_server() -> Iterator[int]:
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    yield listener.getsockname()[1]
    listener.close()


def test_the_relay_delays_each_way_and_counts_round_trips(echo_server: int) -> None:
    with LatencyRelay(echo_server, delay=0.05) as relay:
        with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as conn:
            for word in (b"one", b"two", b"three"):
                sent = time.monotonic()
                conn.sendall(word)
                assert conn.recv(100) == word
                assert time.monotonic() - sent >= 0.1  # the relay never delivers early
        assert relay.round_trips() == 3
        assert relay.connections == 1


def test_the_relay_keeps_order_and_bytes(echo_server: int) -> None:
    data = bytes(range(256)) * 4096
    with LatencyRelay(echo_server, delay=0.01) as relay:
        with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as conn:
            conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)
            got = b"".join(iter(lambda: conn.recv(65536), b""))
    assert got == data


@pytest.fixture
def slow(sshd_factory: SshdFactory, control_dir: Path) -> tuple[SshServer, MuxConnection]:
    server = sshd_factory(latency_ms=10)
    config: fabric.Config = server.fabric_config({"mux": {"control_dir": str(control_dir)}})
    c = MuxConnection(server.alias, config=config)
    c.run("mkdir -p fmux-rt", hide=True)
    return server, c


def cost(server: SshServer, c: MuxConnection, operation: Callable[[], object]) -> int:
    """The round trips to the server that ``operation`` cost, by the code's own count.

    Each mux request the code makes is counted by the master; a new session
    costs two round trips (the channel opens; the command's status comes
    back). The relay's count can only be higher, never lower: it also sees
    the turns that the machine's load adds (a packet the master sent late),
    so it bounds the code's count from below and is not asserted exactly.
    """
    assert server.relay is not None and c.mux_master is not None
    requests = c.mux_master.requests
    sessions = requests["new session"]
    seen = server.relay.round_trips()
    operation()
    counted = BARE_SESSION * (requests["new session"] - sessions)
    assert server.relay.round_trips() - seen >= counted
    return counted


def test_a_warm_run_costs_a_bare_session(slow: tuple[SshServer, MuxConnection]) -> None:
    server, c = slow
    assert cost(server, c, lambda: c.run("true")) == BARE_SESSION


def test_put_and_get_cost_a_bare_session(
    slow: tuple[SshServer, MuxConnection], tmp_path: Path
) -> None:
    server, c = slow
    local = tmp_path / "f.bin"
    local.write_bytes(os.urandom(10_000))
    assert cost(server, c, lambda: c.put(str(local), "fmux-rt/f.bin")) == BARE_SESSION
    assert cost(server, c, lambda: c.get("fmux-rt/f.bin", str(tmp_path / "b.bin"))) == BARE_SESSION
    stream = io.BytesIO(b"y" * 10_000)
    assert cost(server, c, lambda: c.put(stream, "fmux-rt/g.bin")) == BARE_SESSION
    # One session whatever the size: a put's bytes always follow on stdin (a round
    # trip more on the wire, once the command has started; the relay sees it).
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(200_000))
    assert cost(server, c, lambda: c.put(str(big), "fmux-rt/big.bin")) == BARE_SESSION
    assert (tmp_path / "b.bin").read_bytes() == local.read_bytes()
    c.run("rm -rf fmux-rt")
    assert server.logins() == 1
