"""Which server a master process is connected to: the kernel's word.

A master at the user's path whose route is direct is ridden only when its
process holds a TCP connection to an address the route's host name resolves to,
at the route's port. Its command line, or the path's tokens, say which route it
was started for; only this says where it went: a master that reached its server
through a ProxyCommand or a jump host of its own (``ssh -J``, ``-o
ProxyCommand=...`` on the user's command line, which a ``ControlPersist``
master's rewritten title no longer shows) holds no such connection (its ssh
talks to the proxy over pipes), and one whose ssh_config sent it elsewhere
(``Match exec`` answering otherwise then) holds another.

Linux: the process's socket descriptors (``/proc/PID/fd``) joined with the TCP
table of its network namespace (``/proc/PID/net/tcp`` and ``tcp6``).
Elsewhere: ``lsof``. None wherever that cannot be read.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys

__all__ = ["Peer", "addresses_of", "parse_lsof", "parse_tcp_table", "tcp_peers"]

#: An address and a port, the address as :mod:`ipaddress` writes it (an IPv4
#: address mapped into IPv6 written as IPv4).
Peer = tuple[str, int]

_ESTABLISHED = "01"


def tcp_peers(pid: int, platform: str = sys.platform) -> frozenset[Peer] | None:
    """The far ends of process ``pid``'s established TCP connections; None if
    they cannot be read (not our process, no ``/proc``, no ``lsof``)."""
    if platform.startswith("linux"):
        return _proc_peers(pid)
    try:
        done = subprocess.run(
            ["lsof", "-a", "-nP", "-p", str(pid), "-iTCP", "-sTCP:ESTABLISHED", "-Fn"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
        )
    except OSError:
        return None
    # lsof exits 1 both when it found nothing and when it may not look.
    if done.returncode not in (0, 1):
        return None
    return parse_lsof(done.stdout.decode("ascii", "replace"))


def _proc_peers(pid: int) -> frozenset[Peer] | None:
    folder = f"/proc/{pid}/fd"
    try:
        names = os.listdir(folder)
    except OSError:
        return None
    inodes = set()
    for name in names:
        try:
            target = os.readlink(f"{folder}/{name}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    peers: set[Peer] = set()
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}", encoding="ascii") as lines:
                text = lines.read()
        except OSError:
            continue  # no IPv6 in this kernel
        peers.update(parse_tcp_table(text, inodes))
    return frozenset(peers)


def parse_tcp_table(text: str, inodes: set[str]) -> set[Peer]:
    """The far ends of the established connections in a ``/proc/net/tcp`` (or
    ``tcp6``) table whose socket inode is among ``inodes``."""
    peers = set()
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] != _ESTABLISHED or fields[9] not in inodes:
            continue
        address, _, port = fields[2].partition(":")
        try:
            raw = bytes.fromhex(address)
            # The kernel writes each 32-bit word in its own byte order.
            if sys.byteorder == "little":
                raw = b"".join(raw[at : at + 4][::-1] for at in range(0, len(raw), 4))
            peers.add((_written(ipaddress.ip_address(raw)), int(port, 16)))
        except ValueError:
            continue
    return peers


def parse_lsof(text: str) -> frozenset[Peer]:
    """The far ends in ``lsof -Fn`` output (``n10.0.0.1:50000->10.0.0.2:22``)."""
    peers = set()
    for line in text.splitlines():
        if not line.startswith("n") or "->" not in line:
            continue
        far = line.split("->", 1)[1]
        address, _, port = far.rpartition(":")
        try:
            peers.add((_written(ipaddress.ip_address(address.strip("[]"))), int(port)))
        except ValueError:
            continue
    return frozenset(peers)


def addresses_of(hostname: str, port: str) -> frozenset[Peer] | None:
    """Where ssh may connect for ``hostname`` and ``port`` (an ``ssh -G``
    answer's): every address the name resolves to here; None if it does not."""
    try:
        found = socket.getaddrinfo(hostname, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return None
    peers = set()
    for _family, _type, _proto, _name, where in found:
        try:
            address = str(where[0]).partition("%")[0]  # a scope (fe80::1%eth0) is no part
            peers.add((_written(ipaddress.ip_address(address)), int(where[1])))
        except ValueError:
            continue
    return frozenset(peers)


def _written(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)
