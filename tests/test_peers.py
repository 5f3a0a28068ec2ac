"""Who is at the other end of a UNIX socket, on each system: Linux for real, the others
with their platform calls faked (they cannot run here). The ``ps`` paths of macOS
and the BSDs run for real against this machine's ``ps``."""

from __future__ import annotations

import os
import select
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from fabric_mux import peers
from fabric_mux.askpass import AskpassServer
from fabric_mux.peers import PeerCredentials, parent_pid, peer_credentials

XUCRED = struct.Struct("=IIh2x16I")  # macOS: 76 bytes
XUCRED_FREEBSD = struct.Struct("=IIh2x16I4xi4x")  # FreeBSD 13: 88 bytes, cr_pid


class FakeSocket:
    """Answers getsockopt(level, option, size) from a table, and records the calls."""

    def __init__(self, answers: dict[tuple[int, int], bytes]) -> None:
        self.answers = answers
        self.asked: list[tuple[int, int, int]] = []

    def getsockopt(self, level: int, option: int, size: int) -> bytes:
        self.asked.append((level, option, size))
        if (level, option) not in self.answers:
            raise OSError(92, "Protocol not available")
        return self.answers[(level, option)][:size]

    def fileno(self) -> int:
        return 7


def groups(first: int) -> list[int]:
    return [first, *range(1, 16)]


def test_linux_says_pid_uid_and_gid() -> None:
    left, right = socket.socketpair(socket.AF_UNIX)
    with left, right:
        assert peer_credentials(left) == (os.getpid(), os.geteuid(), os.getegid())


def test_macos_reads_xucred_and_the_peer_pid() -> None:
    fake = FakeSocket(
        {
            (0, 0x001): XUCRED.pack(0, 501, 3, *groups(20)),  # LOCAL_PEERCRED
            (0, 0x002): struct.pack("=i", 4242),  # LOCAL_PEERPID
        }
    )
    assert peer_credentials(fake, "darwin") == PeerCredentials(4242, 501, 20)  # type: ignore[arg-type]
    assert [(level, option) for level, option, _ in fake.asked] == [(0, 1), (0, 2)]


@pytest.mark.parametrize(("pid", "expected"), [(777, 777), (0, None)])
def test_freebsd_reads_the_pid_from_xucred_from_13_on(pid: int, expected: int | None) -> None:
    fake = FakeSocket({(0, 0x001): XUCRED_FREEBSD.pack(0, 1001, 1, *groups(1001), pid)})
    assert peer_credentials(fake, "freebsd14") == PeerCredentials(expected, 1001, 1001)  # type: ignore[arg-type]


def test_an_unknown_xucred_version_is_refused() -> None:
    fake = FakeSocket({(0, 0x001): XUCRED.pack(1, 0, 1, *groups(0)), (0, 0x002): b"\0" * 4})
    with pytest.raises(OSError, match="version 1"):
        peer_credentials(fake, "darwin")  # type: ignore[arg-type]


def test_openbsd_orders_its_peercred_uid_gid_pid() -> None:
    # Python's SO_PEERCRED here is Linux's number; on OpenBSD it is OpenBSD's (0x1022).
    option = getattr(socket, "SO_PEERCRED", 0x1022)
    fake = FakeSocket({(socket.SOL_SOCKET, option): struct.pack("3i", 1000, 1000, 31337)})
    assert peer_credentials(fake, "openbsd7") == PeerCredentials(31337, 1000, 1000)  # type: ignore[arg-type]


def test_netbsd_reads_local_peereid() -> None:
    fake = FakeSocket({(0, 0x003): struct.pack("3i", 555, 1000, 100)})
    assert peer_credentials(fake, "netbsd10") == PeerCredentials(555, 1000, 100)  # type: ignore[arg-type]


def test_elsewhere_getpeereid_gives_the_uid_and_no_pid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peers, "_getpeereid", lambda fd: (1000, 50) if fd == 7 else (-1, -1))
    assert peer_credentials(FakeSocket({}), "sunos5") == PeerCredentials(None, 1000, 50)  # type: ignore[arg-type]


def test_without_a_peer_pid_no_prompt_is_answered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        "fabric_mux.askpass.peer_credentials",
        lambda conn: PeerCredentials(None, os.geteuid(), os.getegid()),
    )
    with AskpassServer(tmp_path, lambda prompt, hint: "secret") as server:
        server.expect_parent(os.getpid())
        with socket.socket(socket.AF_UNIX) as conn:
            conn.connect(server.path)
            conn.sendall(b"\0p: ")
            conn.shutdown(socket.SHUT_WR)
            assert conn.recv(16) == b"0"


def test_ps_gives_the_parent_where_there_is_no_proc() -> None:
    # This machine's ps takes the same options as macOS's and the BSDs'.
    assert parent_pid(os.getpid(), "darwin") == os.getppid()
    gone = subprocess.Popen(["true"])
    gone.wait()
    assert parent_pid(gone.pid, "freebsd14") is None


def test_ps_finds_our_processes_by_an_argument() -> None:
    marker = f"fabric-mux-marker-{os.getpid()}"
    sleeper = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()", marker], stdin=subprocess.PIPE
    )
    try:
        assert peers.processes_with_argument(marker, os.geteuid(), "darwin") == [sleeper.pid]
        assert peers.processes_with_argument(marker[:-1], os.geteuid(), "darwin") == []
        assert peers.processes_with_argument(marker, os.geteuid() + 1, "darwin") == []
        assert peers.processes_with_argument(marker, os.geteuid()) == [sleeper.pid]  # /proc
    finally:
        sleeper.communicate(b"")


def test_without_waitid_a_kqueue_waits_for_the_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    registered: list[tuple[int, int, int, int]] = []

    class FakeQueue:
        def control(
            self, events: list[tuple[int, int, int, int]], count: int, timeout: None
        ) -> list[object]:
            registered.extend(events)
            return [object()]

        def close(self) -> None:
            registered.append((0, 0, 0, 0))

    monkeypatch.delattr(os, "waitid")
    for name, value in {
        "KQ_FILTER_PROC": -5,
        "KQ_EV_ADD": 1,
        "KQ_EV_ONESHOT": 16,
        "KQ_NOTE_EXIT": 0x80000000,
    }.items():
        monkeypatch.setattr(select, name, value, raising=False)
    monkeypatch.setattr(select, "kqueue", FakeQueue, raising=False)
    monkeypatch.setattr(
        select,
        "kevent",
        lambda ident, filter, flags, fflags: (ident, filter, flags, fflags),
        raising=False,
    )
    peers.wait_for_exit(4242)
    assert registered == [(4242, -5, 17, 0x80000000), (0, 0, 0, 0)]


def test_waitid_leaves_the_child_unreaped() -> None:
    child = subprocess.Popen(["true"])
    peers.wait_for_exit(child.pid)
    assert Path(f"/proc/{child.pid}").exists()  # a zombie: its pid is not free yet
    assert child.wait() == 0
