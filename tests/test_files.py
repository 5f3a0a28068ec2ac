"""put, get and sftp() through the master against a real sshd: bytes intact, one login."""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import fabric
import pytest
from waiting import wait_until

from fabric_mux import MuxConnection
from fabric_mux.testing import SshServer
from fabric_mux.transfer import ProgressBar

#: The remote folder of this test run (runs of the suite may share an account).
DIR = f"fmux-files-{os.getpid()}"


def sessions_open(sshd: SshServer) -> int:
    text = sshd.log.read_text()
    return text.count("Starting session:") - text.count("Close session:")


@pytest.fixture
def c(sshd: SshServer, config: fabric.Config) -> Iterator[MuxConnection]:
    connection = MuxConnection(sshd.alias, config=config)
    connection.run(f"rm -rf {DIR} && mkdir {DIR}", hide=True)
    yield connection
    connection.run(f"rm -rf {DIR}", hide=True)


@pytest.mark.parametrize("size", [0, 1, 65537, 5 * 1024 * 1024 + 3])
def test_put_then_get_round_trips_bytes(c: MuxConnection, tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    source, back = tmp_path / "source.bin", tmp_path / "back.bin"
    source.write_bytes(data)
    uploaded = c.put(str(source), f"{DIR}/data.bin")
    assert uploaded.remote.endswith(f"/{DIR}/data.bin")
    assert c.run(f"wc -c < {DIR}/data.bin", hide=True).stdout.strip() == str(size)
    c.get(f"{DIR}/data.bin", str(back))
    assert back.read_bytes() == data


def test_file_like_objects_both_ways(c: MuxConnection) -> None:
    data = os.urandom(300_000)
    c.put(io.BytesIO(data), f"{DIR}/fl.bin")
    out = io.BytesIO()
    c.get(f"{DIR}/fl.bin", out)
    assert out.getvalue() == data


def test_modes_are_preserved_both_ways(c: MuxConnection, tmp_path: Path) -> None:
    script = tmp_path / "tool.sh"
    script.write_text("#!/bin/sh\necho tool\n")
    script.chmod(0o751)
    c.put(str(script), f"{DIR}/tool.sh")
    assert c.run(f"stat -c %a {DIR}/tool.sh", hide=True).stdout.strip() == "751"
    assert c.run(f"./{DIR}/tool.sh", hide=True).stdout == "tool\n"
    c.run(f"chmod 640 {DIR}/tool.sh")
    c.get(f"{DIR}/tool.sh", str(tmp_path / "back.sh"))
    assert stat.S_IMODE((tmp_path / "back.sh").stat().st_mode) == 0o640


def test_relative_absolute_and_folder_targets(
    c: MuxConnection, sshd: SshServer, tmp_path: Path
) -> None:
    local = tmp_path / "named.txt"
    local.write_text("content\n")
    home = c.run("pwd", hide=True).stdout.strip()
    c.put(str(local), f"{DIR}/")  # a folder: the local name is kept
    c.put(str(local), f"{home}/{DIR}/absolute.txt")
    listing = c.run(f"ls {DIR}", hide=True).stdout.split()
    assert listing == ["absolute.txt", "named.txt"]
    target = tmp_path / "into"
    target.mkdir()
    result = c.get(f"{DIR}/absolute.txt", f"{target}/")
    assert result.local == f"{target}/absolute.txt"
    assert (target / "absolute.txt").read_text() == "content\n"
    assert sshd.logins() == 1


def test_missing_remote_file_raises_and_writes_nothing(c: MuxConnection, tmp_path: Path) -> None:
    target = tmp_path / "never.bin"
    with pytest.raises(FileNotFoundError):
        c.get(f"{DIR}/missing.bin", str(target))
    assert not target.exists()


def test_a_failed_remote_write_raises(c: MuxConnection, tmp_path: Path) -> None:
    local = tmp_path / "x.bin"
    local.write_bytes(b"x" * 1000)
    c.run(f"mkdir {DIR}/locked && chmod 500 {DIR}/locked")
    with pytest.raises(PermissionError, match="Permission denied"):
        c.put(str(local), f"{DIR}/locked/x.bin")


def test_a_put_over_a_file_the_account_may_not_write_says_why(
    c: MuxConnection, tmp_path: Path
) -> None:
    local = tmp_path / "x.bin"
    local.write_bytes(b"x" * 1000)
    c.run(f"echo old > {DIR}/readonly.bin && chmod 400 {DIR}/readonly.bin")
    with pytest.raises(PermissionError, match=f"{DIR}/readonly.bin.*Permission denied"):
        c.put(str(local), f"{DIR}/readonly.bin")
    assert c.run(f"cat {DIR}/readonly.bin", hide=True).stdout == "old\n"


def test_sftp_client_works_and_closing_ends_its_session(c: MuxConnection, sshd: SshServer) -> None:
    sftp = c.sftp()
    assert c.sftp() is sftp
    with sftp.open(f"{DIR}/by-sftp.txt", "w") as remote:
        remote.write("written over sftp\n")
    assert "by-sftp.txt" in sftp.listdir(f"{DIR}")
    assert c.run(f"cat {DIR}/by-sftp.txt", hide=True).stdout == "written over sftp\n"
    assert wait_until(lambda: sessions_open(sshd) == 1)  # the sftp subsystem (others close late)
    c.close()
    assert wait_until(lambda: sessions_open(sshd) == 0)
    assert sshd.logins() == 1


def test_progress_reports_reach_the_total(c: MuxConnection, tmp_path: Path) -> None:
    local = tmp_path / "big.bin"
    local.write_bytes(os.urandom(3 * 1024 * 1024))
    seen: list[tuple[int, int]] = []
    sftp = c.sftp()
    sftp.put(str(local), f"{DIR}/big.bin", callback=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (3 * 1024 * 1024, 3 * 1024 * 1024)
    assert all(done <= total for done, total in seen)


def test_put_and_get_report_progress_when_asked(
    c: MuxConnection, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    size = 2 * 1024 * 1024
    local = tmp_path / "big.bin"
    local.write_bytes(os.urandom(size))
    up: list[tuple[int, int]] = []
    down: list[tuple[int, int]] = []
    streamed: list[tuple[int, int]] = []
    c.put(str(local), f"{DIR}/big.bin", progress=lambda done, total: up.append((done, total)))
    c.get(f"{DIR}/big.bin", str(tmp_path / "back.bin"), progress=lambda d, t: down.append((d, t)))
    c.get(f"{DIR}/big.bin", io.BytesIO(), progress=lambda d, t: streamed.append((d, t)))
    assert up[-1] == down[-1] == streamed[-1] == (size, size)
    assert all(done <= size for done, _ in up + down + streamed)
    c.put(str(local), f"{DIR}/again.bin")  # no progress unless asked
    c.get(f"{DIR}/again.bin", str(tmp_path / "again.bin"), progress=True)  # not a terminal
    assert capsys.readouterr().err == ""


def test_progress_bar_line() -> None:
    out = io.StringIO()
    bar = ProgressBar("file.bin", out)
    bar(512 * 1024, 1024 * 1024)
    bar(1024 * 1024, 1024 * 1024)
    lines = out.getvalue().split("\r")[1:]
    assert lines[0].startswith("file.bin   50%  0.5/1.0 MB")
    assert lines[1].startswith("file.bin  100%  1.0/1.0 MB") and lines[1].endswith("\n")


def test_more_connections_than_slots_can_each_put(
    c: MuxConnection, sshd: SshServer, config: fabric.Config, tmp_path: Path
) -> None:
    local = tmp_path / "small.bin"
    local.write_bytes(b"x" * 1000)
    connections = [c] + [MuxConnection(sshd.alias, config=config) for _ in range(11)]
    for n, connection in enumerate(connections):
        connection.put(str(local), f"{DIR}/copy{n}.bin")  # no idle SFTP session holds a slot
    assert connections[0].run(f"ls {DIR} | wc -l", hide=True).stdout.strip() == "12"
