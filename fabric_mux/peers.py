"""Who is at the other end of a UNIX socket: the kernel's word, not the peer's.

Used before trusting a control socket (is the master ours?) and an askpass
connection (is it the master's own ssh asking?).

Each system says it its own way: Linux ``SO_PEERCRED`` (pid, uid, gid);
OpenBSD ``SO_PEERCRED`` too, in another order (uid, gid, pid); macOS
``LOCAL_PEERCRED`` (a ``struct xucred``: uid and groups) and ``LOCAL_PEERPID``;
FreeBSD ``LOCAL_PEERCRED``, whose ``xucred`` carries the pid from 13.0;
NetBSD ``LOCAL_PEEREID`` (pid, uid, gid); anywhere else ``getpeereid()``
(uid and gid, no pid). Process facts come from ``/proc`` on Linux and from
``ps`` elsewhere.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import pwd
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

__all__ = [
    "PeerCredentials",
    "parent_pid",
    "peer_credentials",
    "process_argv",
    "process_cwd",
    "process_started",
    "processes_running",
    "processes_with_argument",
    "user_name",
    "wait_for_exit",
]

_UCRED = struct.Struct("3i")  # Linux struct ucred: pid, uid, gid
_SOCKPEERCRED = struct.Struct("3i")  # OpenBSD struct sockpeercred: uid, gid, pid
_UNPCBID = struct.Struct("3i")  # NetBSD struct unpcbid: pid, euid, egid
# struct xucred: u_int cr_version, uid_t cr_uid, short cr_ngroups, gid_t cr_groups[16]
# (macOS and FreeBSD); FreeBSD 13 adds a union holding cr_pid, pointer-aligned.
_XUCRED = struct.Struct("=IIh2x16I")
_XUCRED_PID = struct.Struct("=IIh2x16I4xi4x")
_XUCRED_VERSION = 0
_PID = struct.Struct("=i")

# <sys/un.h>: the level for UNIX-socket options, and the options themselves.
_SOL_LOCAL = 0
_LOCAL_PEERCRED = 0x001  # macOS, FreeBSD
_LOCAL_PEERPID = 0x002  # macOS
_LOCAL_PEEREID = 0x003  # NetBSD


class PeerCredentials(NamedTuple):
    #: None where the system does not tell (``getpeereid()``, FreeBSD before 13).
    pid: int | None
    uid: int
    gid: int


def peer_credentials(sock: socket.socket, platform: str = sys.platform) -> PeerCredentials:
    """The pid, uid and gid of the process that connected (or listens on) ``sock``.

    :raises OSError: where the system cannot say.
    """
    if platform.startswith("linux"):
        pid, uid, gid = _UCRED.unpack(
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
        )
        return PeerCredentials(pid, uid, gid)
    if platform.startswith("openbsd"):
        option = getattr(socket, "SO_PEERCRED", 0x1022)
        uid, gid, pid = _SOCKPEERCRED.unpack(
            sock.getsockopt(socket.SOL_SOCKET, option, _SOCKPEERCRED.size)
        )
        return PeerCredentials(pid, uid, gid)
    if platform.startswith("netbsd"):
        pid, uid, gid = _UNPCBID.unpack(sock.getsockopt(_SOL_LOCAL, _LOCAL_PEEREID, _UNPCBID.size))
        return PeerCredentials(pid, uid, gid)
    if platform == "darwin":
        uid, gid = _xucred(sock)[:2]
        (pid,) = _PID.unpack(sock.getsockopt(_SOL_LOCAL, _LOCAL_PEERPID, _PID.size))
        return PeerCredentials(pid, uid, gid)
    if platform.startswith(("freebsd", "dragonfly")):
        uid, gid, pid = _xucred(sock)
        return PeerCredentials(pid, uid, gid)
    uid, gid = _getpeereid(sock.fileno())
    return PeerCredentials(None, uid, gid)


def _xucred(sock: socket.socket) -> tuple[int, int, int | None]:
    """uid, first group and (FreeBSD 13 on) pid from ``LOCAL_PEERCRED``."""
    raw = sock.getsockopt(_SOL_LOCAL, _LOCAL_PEERCRED, _XUCRED_PID.size)
    if len(raw) >= _XUCRED_PID.size:
        version, uid, ngroups, *rest = _XUCRED_PID.unpack(raw[: _XUCRED_PID.size])
        groups, pid = rest[:16], rest[16]
    else:
        version, uid, ngroups, *groups = _XUCRED.unpack(raw[: _XUCRED.size])
        pid = None
    if version != _XUCRED_VERSION:
        raise OSError(f"LOCAL_PEERCRED gave a struct xucred of version {version}")
    return uid, groups[0] if ngroups > 0 else -1, pid or None


def _getpeereid(fd: int) -> tuple[int, int]:
    """``getpeereid()`` from the C library: uid and gid of a UNIX socket's peer."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    uid, gid = ctypes.c_uint32(), ctypes.c_uint32()
    if libc.getpeereid(fd, ctypes.byref(uid), ctypes.byref(gid)) != 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))
    return uid.value, gid.value


def _ps(*args: str) -> list[str]:
    """``ps``'s lines (no header), or none if it fails: BSD and macOS process facts."""
    try:
        done = subprocess.run(
            ["ps", *args], stdin=subprocess.DEVNULL, capture_output=True, check=False
        )
    except OSError:
        return []
    if done.returncode != 0:
        return []
    return done.stdout.decode("utf-8", "replace").splitlines()


def parent_pid(pid: int, platform: str = sys.platform) -> int | None:
    """The parent of process ``pid``; None once it is gone."""
    if not platform.startswith("linux"):
        lines = _ps("-o", "ppid=", "-p", str(pid))
        return int(lines[0]) if lines and lines[0].strip().isdigit() else None
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            text = stat.read().decode("ascii", "replace")
    except OSError:
        return None
    # The command name in parentheses may hold spaces and parentheses itself.
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1])


def process_argv(pid: int, platform: str = sys.platform) -> list[str] | None:
    """Process ``pid``'s argv as it stands now (a program may have rewritten it, as
    ssh does to show ``ssh: PATH [mux]``); None if it cannot be read.

    Linux: ``/proc/PID/cmdline``. macOS: ``sysctl`` ``KERN_PROCARGS2``, the argv
    words themselves. Elsewhere ``ps``, which joins the words with spaces: a
    word holding a space cannot be told from two there.
    """
    if platform.startswith("linux"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                raw = cmdline.read()
        except OSError:
            return None
        return _words(raw) if raw else None
    if platform == "darwin":
        return _procargs(pid)
    lines = _ps("-ww", "-o", "command=", "-p", str(pid))
    return lines[0].split() if lines and lines[0].strip() else None


def process_cwd(pid: int, platform: str = sys.platform) -> str | None:
    """Process ``pid``'s working folder (where its relative paths point); None if
    it cannot be told."""
    if platform.startswith("linux"):
        try:
            return os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            return None
    return _lsof_cwd(pid)


def _lsof_cwd(pid: int) -> str | None:
    """macOS and the BSDs: ``lsof``'s ``cwd`` line for ``pid``."""
    try:
        done = subprocess.run(
            ["lsof", "-a", "-d", "cwd", "-Fn", "-p", str(pid)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
        )
    except OSError:
        return None
    for line in done.stdout.decode("utf-8", "surrogateescape").splitlines():
        if line.startswith("n/"):
            return line[1:]
    return None


def process_started(pid: int, platform: str = sys.platform) -> float | None:
    """When process ``pid`` started (seconds since the epoch); None if it cannot be told."""
    if platform.startswith("linux"):
        try:
            with open(f"/proc/{pid}/stat", "rb") as stat:
                text = stat.read().decode("ascii", "replace")
            with open("/proc/stat", "rb") as machine:
                boot = next(int(line.split()[1]) for line in machine if line.startswith(b"btime "))
        except (OSError, StopIteration, ValueError):
            return None
        ticks = int(text[text.rindex(")") + 2 :].split()[19])  # field 22: starttime
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    lines = _ps("-o", "etime=", "-p", str(pid))
    elapsed = _elapsed(lines[0]) if lines else None
    return None if elapsed is None else time.time() - elapsed


def _elapsed(text: str) -> float | None:
    """``ps``'s ``etime`` (``[[dd-]hh:]mm:ss``) in seconds."""
    days, _, clock = text.strip().rpartition("-")
    parts = clock.split(":")
    if not all(part.isdigit() for part in parts) or not 2 <= len(parts) <= 3:
        return None
    seconds = 0
    for part in parts:
        seconds = seconds * 60 + int(part)
    return seconds + (int(days) * 86400 if days.isdigit() else 0)


def _words(raw: bytes) -> list[str]:
    """NUL-separated argv bytes as words; a rewritten title's NUL padding dropped."""
    words = raw.split(b"\0")
    if words and words[-1] == b"":
        words.pop()
    while len(words) > 1 and words[-1] == b"":
        words.pop()  # a title shorter than the argv it overwrote
    return [os.fsdecode(word) for word in words]


#: <sys/sysctl.h>: CTL_KERN, KERN_PROCARGS2 (macOS).
_CTL_KERN = 1
_KERN_PROCARGS2 = 49


def _procargs(pid: int) -> list[str] | None:
    """macOS's ``KERN_PROCARGS2``: an int argc, the executable's path, NUL
    padding, then argc NUL-terminated words (then the environment)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    mib = (ctypes.c_int * 3)(_CTL_KERN, _KERN_PROCARGS2, pid)
    size = ctypes.c_size_t(256 * 1024)
    buffer = ctypes.create_string_buffer(size.value)
    if libc.sysctl(mib, 3, buffer, ctypes.byref(size), None, 0) != 0:
        return None
    return procargs_words(buffer.raw[: size.value])


def procargs_words(raw: bytes) -> list[str] | None:
    """The argv words of a ``KERN_PROCARGS2`` answer (see :func:`_procargs`)."""
    if len(raw) < 4:
        return None
    (argc,) = _PID.unpack(raw[:4])
    rest = raw[4:]
    end = rest.find(b"\0")
    if end < 0:
        return None
    rest = rest[end:].lstrip(b"\0")  # the executable's path and its padding
    words = rest.split(b"\0")[:argc]
    if len(words) < argc:
        return None
    return [os.fsdecode(word) for word in words]


def user_name(uid: int) -> str:
    """``name (uid N)`` for messages; just the number if the account is unknown."""
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def processes_with_argument(argument: str, uid: int, platform: str = sys.platform) -> list[int]:
    """Our (``uid``'s) running processes whose argv holds ``argument`` exactly.

    Without ``/proc``, ``ps`` shows a process's argv joined by spaces: an
    argument is found when it stands between spaces there.
    """
    return _processes(
        uid,
        lambda argv: argument in argv,
        lambda command: f" {argument} " in f" {command} ",
        platform,
    )


def processes_running(argv: Sequence[str], uid: int, platform: str = sys.platform) -> list[int]:
    """Our (``uid``'s) running processes whose argv is ``argv``, word for word
    (without ``/proc``: as ``ps`` joins the words)."""
    wanted = list(argv)
    return _processes(
        uid, lambda seen: seen == wanted, lambda command: command == " ".join(wanted), platform
    )


def _processes(
    uid: int,
    test: Callable[[list[str]], bool],
    test_joined: Callable[[str], bool],
    platform: str,
) -> list[int]:
    """Our (``uid``'s) processes whose argv passes ``test`` (``/proc``), or whose
    command as ``ps`` shows it passes ``test_joined`` (elsewhere)."""
    found = []
    if not platform.startswith("linux"):
        for line in _ps("-ax", "-ww", "-o", "pid=,uid=,command="):
            words = line.split(None, 2)
            if len(words) == 3 and words[1] == str(uid) and test_joined(words[2]):
                found.append(int(words[0]))
        return found
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.stat(f"/proc/{name}").st_uid != uid:
                continue
            with open(f"/proc/{name}/cmdline", "rb") as cmdline:
                raw = cmdline.read()
        except OSError:
            continue
        if raw and test(_words(raw)):
            found.append(int(name))
    return found


def wait_for_exit(pid: int) -> None:
    """Return once our child ``pid`` has ended, without reaping it: until it is
    reaped, its pid cannot be another process's.

    ``waitid(WNOWAIT)`` where there is one (Linux; macOS from Python 3.13),
    else a kqueue's ``NOTE_EXIT`` (macOS, the BSDs).
    """
    waitid: Any = getattr(os, "waitid", None)
    if waitid is not None and hasattr(os, "WNOWAIT"):
        waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
        return
    import select

    queue: Any = select.kqueue()  # type: ignore[attr-defined,unused-ignore]
    try:
        event = select.kevent(  # type: ignore[attr-defined,unused-ignore]
            pid,
            filter=select.KQ_FILTER_PROC,  # type: ignore[attr-defined,unused-ignore]
            flags=select.KQ_EV_ADD | select.KQ_EV_ONESHOT,  # type: ignore[attr-defined,unused-ignore]
            fflags=select.KQ_NOTE_EXIT,  # type: ignore[attr-defined,unused-ignore]
        )
        try:
            queue.control([event], 1, None)
        except ProcessLookupError:
            return  # already ended: a zombie cannot be watched
    finally:
        queue.close()
