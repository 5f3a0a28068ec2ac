"""Which server a process is connected to, read from the kernel (or lsof)."""

from __future__ import annotations

import os
import socket
import sys

from fabric_mux.connected import addresses_of, parse_lsof, parse_tcp_table, tcp_peers

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


def test_lsof_gives_the_far_ends() -> None:
    text = "p42\nf3\nn10.0.0.1:50000->10.0.0.2:22\nf4\nn[::1]:5000->[::1]:2222\nf5\nn*:22\n"
    assert parse_lsof(text) == {("10.0.0.2", 22), ("::1", 2222)}


def test_a_live_connection_of_this_process_is_seen_and_a_closed_one_is_not() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        peers = tcp_peers(os.getpid())
        assert peers is not None and ("127.0.0.1", port) in peers
        client.close()
        accepted.close()
        peers = tcp_peers(os.getpid())
        assert peers is not None and ("127.0.0.1", port) not in peers


def test_another_accounts_process_cannot_be_read() -> None:
    if os.getuid() == 0:
        assert tcp_peers(1) is not None  # root reads every process's
    else:
        assert tcp_peers(1) is None


def test_a_name_resolves_to_its_addresses_and_an_unknown_one_to_none() -> None:
    assert addresses_of("127.0.0.1", "2222") == {("127.0.0.1", 2222)}
    assert addresses_of("::1", "22") in ({("::1", 22)}, None)  # no IPv6 in some containers
    assert addresses_of("nowhere.invalid", "22") is None
