"""Which server a process is connected to, read from the kernel (or lsof)."""

from __future__ import annotations

import socket
import subprocess
import sys

from fabric_mux.connected import addresses_of, parse_lsof, parse_tcp_table, transport_peer

#: A /proc/net/tcp table (little-endian words): one established connection to
#: 127.0.0.1:22 (inode 111), one listening socket, one of another process.
TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:D431 0100007F:0016 01 00000000:00000000 00:00000000 00000000     0        0 111 1
   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 112 1
   2: 0100007F:D432 0201A8C0:0016 01 00000000:00000000 00:00000000 00000000     0        0 999 1
"""
#: /proc/net/tcp6: ::1 port 2222, and 10.0.0.5 port 22 mapped into IPv6.
TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue
   0: 00000000000000000000000001000000:D431 00000000000000000000000001000000:08AE 01 0:0 0 0 0 0 121
   1: 0000000000000000FFFF00000100007F:D432 0000000000000000FFFF000005000A0A:0016 01 0:0 0 0 0 0 122
"""


def test_the_tcp_tables_give_the_far_ends_of_the_processs_own_connections() -> None:
    assert sys.byteorder == "little"  # the tables above are such a kernel's
    assert parse_tcp_table(TCP, {"111", "112"}) == {("127.0.0.1", 22)}
    assert parse_tcp_table(TCP6, {"121", "122"}) == {("::1", 2222), ("10.10.0.5", 22)}
    assert parse_tcp_table(TCP, set()) == set()


def test_lsof_gives_the_far_end_of_the_first_socket_or_pipe() -> None:
    head = "p42\nfcwd\ntDIR\nn/\nf0\ntCHR\nn/dev/null\nf3\ntREG\nn/var/log/ssh.log\n"
    direct = "f4\ntIPv6\nn[::1]:5000->[::1]:2222\nf5\ntunix\nn/tmp/cm\n"
    assert parse_lsof(head + direct) == ("::1", 2222)
    # A ProxyCommand's pipe first: a forwarded connection later is not the transport.
    proxied = "f4\ntPIPE\nn->0x1\nf6\ntIPv4\nn10.0.0.1:50000->10.0.0.2:22\n"
    assert parse_lsof(head + proxied) is None
    assert parse_lsof("") is None


def test_the_transport_is_this_processs_first_socket() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        # In a fresh process (as ssh is), the first socket after stderr:
        probe = (
            "import os, socket, sys\n"
            "c = socket.create_connection(('127.0.0.1', int(sys.argv[1])))\n"
            "print(c.fileno(), flush=True)\n"
            "sys.stdin.read()\n"
        )
        child = subprocess.Popen(
            [sys.executable, "-c", probe, str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            close_fds=True,
        )
        try:
            assert child.stdout is not None and child.stdout.readline().strip() == "3"
            accepted, _ = server.accept()
            assert transport_peer(child.pid) == ("127.0.0.1", port)
        finally:
            assert child.stdin is not None
            child.stdin.close()
            child.wait()
            accepted.close()


def test_a_process_whose_first_descriptor_is_a_pipe_has_no_tcp_transport() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        probe = (
            "import os, socket, sys\n"
            "r, w = os.pipe()\n"
            "c = socket.create_connection(('127.0.0.1', int(sys.argv[1])))\n"
            "print(r, c.fileno(), flush=True)\n"
            "sys.stdin.read()\n"
        )
        child = subprocess.Popen(
            [sys.executable, "-c", probe, str(server.getsockname()[1])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None and child.stdout.readline().split() == ["3", "5"]
            accepted, _ = server.accept()
            assert transport_peer(child.pid) is None  # a pipe came first: a proxy's
        finally:
            assert child.stdin is not None
            child.stdin.close()
            child.wait()
            accepted.close()


def test_a_process_that_is_gone_has_no_transport() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert transport_peer(child.pid) is None


def test_a_name_resolves_to_its_addresses_and_an_unknown_one_to_none() -> None:
    assert addresses_of("127.0.0.1", "2222") == frozenset({("127.0.0.1", 2222)})
    # Some containers have no IPv6.
    assert addresses_of("::1", "22") in (frozenset({("::1", 22)}), None)
    assert addresses_of("nowhere.invalid", "22") is None
