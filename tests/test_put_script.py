"""The put's remote script itself, run here by /bin/sh as the server runs it: where
its bytes land while they come, and what is left when it is ended or another
user has put something in their way. (The transfers over ssh: test_transfer.py.)"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
from pathlib import Path

import pytest
from waiting import wait_until

from fabric_mux.putting import PUT_SCRIPT

DATA = b"SECRET=hunter2\n" * 100
WORD = "0123456789abcdef"


def tools(tmp_path: Path, without: tuple[str, ...] = ()) -> str:
    """A PATH holding the programs the script runs (but those ``without``)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for name in ("cat", "wc", "chmod", "mv", "rm", "mktemp"):
        if name not in without:
            found = shutil.which(name)
            assert found is not None
            (folder / name).symlink_to(found)
    return str(folder)


def put_script(
    target: Path, path: str, stdin: int | bytes = DATA, size: int = len(DATA)
) -> subprocess.Popen[bytes]:
    argv = ["/bin/sh", "-c", PUT_SCRIPT, "sh", str(target), "", "", WORD, str(size)]
    return subprocess.Popen(
        argv,
        stdin=subprocess.PIPE if isinstance(stdin, bytes) else stdin,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={"PATH": path},
        cwd=target.parent,
    )


def landing_files(folder: Path) -> list[Path]:
    return sorted(folder.glob(".fabric-mux-*"))


def put_under_way(tmp_path: Path, sent: int) -> tuple[Path, subprocess.Popen[bytes], int]:
    """A put over ``tmp_path/app.env`` (which holds ``old``) whose first ``sent``
    bytes are in its landing file: the target, the script and its stdin's end."""
    target = tmp_path / "app.env"
    target.write_bytes(b"old\n")
    reading, feeding = os.pipe()
    script = put_script(target, tools(tmp_path), stdin=reading)
    os.close(reading)
    try:
        os.write(feeding, DATA[:sent])
        assert wait_until(lambda: any(f.stat().st_size == sent for f in landing_files(tmp_path)))
    except BaseException:
        os.close(feeding)  # the script ends with its stdin: no process outlives the test
        script.wait(timeout=60)
        raise
    return target, script, feeding


def test_the_landing_file_is_named_by_mktemp_not_by_the_command_line(tmp_path: Path) -> None:
    target, script, feeding = put_under_way(tmp_path, 10)
    try:
        (landing,) = landing_files(tmp_path)
        assert WORD not in landing.name  # the command line's word: every user reads it
        assert stat.S_IMODE(landing.stat().st_mode) == 0o600
        os.write(feeding, DATA[10:])
    finally:
        os.close(feeding)
        script.wait(timeout=60)
    assert script.returncode == 0
    assert target.read_bytes() == DATA and landing_files(tmp_path) == []


def test_a_fifo_put_where_the_landing_file_goes_gets_none_of_the_bytes(tmp_path: Path) -> None:
    """Without mktemp, the name comes from the command line, which another user of
    the server can read: their fifo there is never written to (nor their link)."""
    target = tmp_path / "app.env"
    target.write_bytes(b"old\n")
    fifo = tmp_path / f".fabric-mux-{WORD}"
    os.mkfifo(fifo)
    listening = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a writer would not block
    try:
        script = put_script(target, tools(tmp_path, without=("mktemp",)))
        _, errors = script.communicate(DATA, timeout=60)
        assert script.returncode == 0, errors
        assert os.read(listening, 65536) == b""
    finally:
        os.close(listening)
    assert target.read_bytes() == DATA  # written in place, as SFTP writes


def test_without_mktemp_a_landing_file_of_its_own_is_made_at_the_commands_name(
    tmp_path: Path,
) -> None:
    target = tmp_path / "new.env"
    script = put_script(target, tools(tmp_path, without=("mktemp",)))
    _, errors = script.communicate(DATA, timeout=60)
    assert script.returncode == 0, errors
    assert target.read_bytes() == DATA and landing_files(tmp_path) == []


@pytest.mark.parametrize("ending", ["session gone", "SIGTERM", "SIGHUP"])
def test_a_put_that_breaks_off_leaves_the_old_file_and_no_landing_file(
    tmp_path: Path, ending: str
) -> None:
    """The session gone (its stdin ends early, its stderr is closed: the script's
    report dies of SIGPIPE), or the script signalled as its bytes come: the old file
    stays, and the landing file goes."""
    target, script, feeding = put_under_way(tmp_path, 100)
    try:
        if ending == "session gone":
            assert script.stderr is not None
            script.stderr.close()
        else:
            script.send_signal(getattr(signal, ending))
    finally:
        os.close(feeding)  # the end of its stdin, as a lost session's
    script.wait(timeout=60)
    assert script.returncode != 0
    assert target.read_bytes() == b"old\n"
    assert landing_files(tmp_path) == []


def test_fewer_bytes_than_sent_change_nothing(tmp_path: Path) -> None:
    target = tmp_path / "app.env"
    target.write_bytes(b"old\n")
    script = put_script(target, tools(tmp_path), size=len(DATA) + 1)
    _, errors = script.communicate(DATA, timeout=60)
    assert script.returncode == 1
    assert f"\0fabric-mux-short {len(DATA)}\0".encode() in errors
    assert target.read_bytes() == b"old\n" and landing_files(tmp_path) == []
