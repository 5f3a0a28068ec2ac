"""Which server a master process is connected to: the kernel's word.

A master at the user's path whose route is direct is ridden only when its SSH
transport is a TCP connection to an address the route's host name resolves to,
at the route's port. Its command line, or the path's tokens, say which route it
was started for; only this says where it went: a master that reached its server
through a ProxyCommand or a jump host of its own (``ssh -J``, ``-o
ProxyCommand=...`` on the user's command line, which a ``ControlPersist``
master's rewritten title no longer shows) talks to it over pipes, and one whose
ssh_config sent it elsewhere (``Match exec`` answering otherwise then) holds
another connection.

ssh's transport is the first socket or pipe it holds after stdin, stdout and
stderr: it connects before it opens anything else it keeps (a forwarded
connection, ``-R`` or ``-D``, the control socket, the agent come later, and a
``-E`` log file is no socket), so a forward that happens to reach the host and
port is not taken for it. OpenSSH 8.0 to 10.5 do so alike.

Linux: the process's descriptors (``/proc/PID/fd``) joined with the TCP table of
its network namespace (``/proc/PID/net/tcp`` and ``tcp6``). Elsewhere: ``lsof``.
None wherever that cannot be read.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys

__all__ = ["Peer", "addresses_of", "parse_lsof", "parse_tcp_table", "transport_peer"]

#: An address and a port, the address as :mod:`ipaddress` writes it (an IPv4
#: address mapped into IPv6 written as IPv4).
Peer = tuple[str, int]

_ESTABLISHED = "01"
#: What lsof calls the kinds of descriptor a transport may be.
_LSOF_STREAMS = frozenset({"IPv4", "IPv6", "unix", "PIPE", "FIFO", "sock"})


def transport_peer(pid: int, platform: str = sys.platform) -> Peer | None:
    """The far end of process ``pid``'s SSH transport, if that is an established
    TCP connection; None if it is not (pipes to a proxy), or it cannot be read
    (not our process, no ``/proc``, no ``lsof``)."""
    if platform.startswith("linux"):
        return _proc_transport(pid)
    try:
        done = subprocess.run(
            ["lsof", "-a", "-nP", "-p", str(pid), "-Ffnt"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
        )
    except OSError:
        return None
    return parse_lsof(done.stdout.decode("utf-8", "replace"))


def _proc_transport(pid: int) -> Peer | None:
    folder = f"/proc/{pid}/fd"
    try:
        names = sorted((name for name in os.listdir(folder) if name.isdigit()), key=int)
    except OSError:
        return None
    for name in names:
        if int(name) < 3:
            continue
        try:
            target = os.readlink(f"{folder}/{name}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("pipe:["):
            return None
        if target.startswith("socket:["):
            inode = target[8:-1]
            break
    else:
        return None
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}", encoding="ascii") as lines:
                found = parse_tcp_table(lines.read(), {inode})
        except OSError:
            continue  # no IPv6 in this kernel
        if found:
            return found.pop()
    return None


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


def parse_lsof(text: str) -> Peer | None:
    """The far end of the transport in ``lsof -Ffnt`` output: the first socket or
    pipe after stdin, stdout and stderr, if it is a TCP connection
    (``n10.0.0.1:50000->10.0.0.2:22``)."""
    records: list[tuple[int, str, str]] = []
    fd, kind, name = None, "", ""
    for line in [*text.splitlines(), "f"]:
        field, value = line[:1], line[1:]
        if field == "f":
            if fd is not None:
                records.append((fd, kind, name))
            fd = int(value) if value.isdigit() else None
            kind = name = ""
        elif field == "t":
            kind = value
        elif field == "n":
            name = value
    streams = sorted(record for record in records if record[0] >= 3 and record[1] in _LSOF_STREAMS)
    if not streams or streams[0][1] not in ("IPv4", "IPv6") or "->" not in streams[0][2]:
        return None
    address, _, port = streams[0][2].split("->", 1)[1].rpartition(":")
    try:
        return _written(ipaddress.ip_address(address.strip("[]"))), int(port)
    except ValueError:
        return None


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
