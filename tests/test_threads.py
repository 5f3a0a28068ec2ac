"""Many connections used from many threads at once, as ``fabmux -P`` and
``ThreadingGroup`` use them: no thread touches another's descriptors, and
runs nobody joins give theirs back."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import fabric

from fabric_mux import MuxConnection
from fabric_mux.descriptors import Descriptors
from fabric_mux.testing import SshServer

#: Generous: only there to turn a hang into a failure.
DEADLINE = 60.0


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def until_fds_at_most(count: int) -> int:
    """Our open descriptors once they are down to ``count`` (or at the deadline)."""
    deadline = time.monotonic() + DEADLINE
    while (now := open_fds()) > count and time.monotonic() < deadline:
        time.sleep(0.01)
    return now


def test_a_descriptor_closed_twice_leaves_a_reused_number_alone() -> None:
    with Descriptors("a test's pipes") as fds:
        read_end, write_end = fds.pipe()
        fds.close(read_end)
        other_read, other_write = os.pipe()  # the lowest free number: read_end's
        try:
            fds.close(read_end, None)
            os.fstat(other_read)  # still open: the second close was skipped
            assert fds.owns(write_end) and not fds.owns(read_end)
        finally:
            os.close(other_read)
            os.close(other_write)
    assert not fds.owns(write_end)


def test_runs_and_transfers_in_six_threads_at_once_all_succeed(
    sshd: SshServer, config: fabric.Config, tmp_path: Path
) -> None:
    hosts = sshd.routes(6, prefix="t")
    payload = os.urandom(20000)
    (tmp_path / "payload.bin").write_bytes(payload)

    def deploy(host: str) -> bytes:
        c = MuxConnection(host, config=config)
        try:
            for _ in range(4):
                assert c.run("true", hide=True).ok
            c.put(str(tmp_path / "payload.bin"), f"fmux-threads-{host}.bin")
            back = tmp_path / f"{host}.bin"
            c.get(f"fmux-threads-{host}.bin", str(back))
            c.run(f"rm -f fmux-threads-{host}.bin", hide=True)
            return back.read_bytes()
        finally:
            c.close()

    deploy(hosts[0])  # the process's lasting descriptors (caches) exist from here on
    before = open_fds()
    with ThreadPoolExecutor(len(hosts)) as pool:
        for _ in range(3):
            assert list(pool.map(deploy, hosts)) == [payload] * len(hosts)
    assert until_fds_at_most(before) == before
    assert sshd.logins() == len(hosts)


def test_runs_nobody_joins_give_their_descriptors_back_once_they_end(
    sshd: SshServer, config: fabric.Config
) -> None:
    c = MuxConnection(sshd.alias, config=config)
    c.run("true", hide=True)
    before = open_fds()
    for _ in range(20):
        c.run("true", asynchronous=True, hide=True)  # the promise is dropped
    assert until_fds_at_most(before) == before
    promise = c.run("echo joined late", asynchronous=True, hide=True)
    assert until_fds_at_most(before) == before  # ended, read, and let go of
    assert promise.join().stdout == "joined late\n"
    c.close()
    assert open_fds() == before
