"""The put's remote script itself, run here by /bin/sh as the server runs it: where
its bytes land while they come, and what is left when it is ended or another
user has put something in their way. (The transfers over ssh: test_transfer.py.)"""

from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import subprocess
from pathlib import Path

import pytest
from waiting import wait_until

from fabric_mux.putting import PUT_SCRIPT

DATA = b"SECRET=hunter2\n" * 100


def tools(
    tmp_path: Path, without: tuple[str, ...] = (), before: dict[str, str] | None = None
) -> str:
    """A PATH holding the programs the script runs, but those ``without``; a program
    named in ``before`` runs that shell text first (what another user does meanwhile)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for name in (
        "cat",
        "wc",
        "chmod",
        "mv",
        "rm",
        "rmdir",
        "mkdir",
        "mktemp",
        "ls",
        "od",
        "tr",
        "ln",
    ):
        if name in without:
            continue
        found = shutil.which(name)
        assert found is not None
        if before and name in before:
            wrapper = folder / name
            wrapper.write_text(f'#!/bin/sh\n{before[name]}\nexec {found} "$@"\n')
            wrapper.chmod(0o755)
        else:
            (folder / name).symlink_to(found)
    return str(folder)


def put_script(
    target: Path, path: str, stdin: int | bytes = DATA, size: int = len(DATA), mode: str = ""
) -> subprocess.Popen[bytes]:
    argv = ["/bin/sh", "-c", PUT_SCRIPT, "sh", str(target), "", mode, str(size)]
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


def landing(folder: Path) -> list[bytes]:
    """What the landing files in ``folder`` hold so far."""
    return [f.read_bytes() for d in landing_files(folder) for f in d.glob("f")]


def put_under_way(
    tmp_path: Path, sent: int, without: tuple[str, ...] = ()
) -> tuple[Path, subprocess.Popen[bytes], int]:
    """A put over ``tmp_path/app.env`` (which holds ``old``) whose first ``sent``
    bytes are in its landing file: the target, the script and its stdin's end."""
    target = tmp_path / "app.env"
    target.write_bytes(b"old\n")
    reading, feeding = os.pipe()
    script = put_script(target, tools(tmp_path, without), stdin=reading)
    os.close(reading)
    try:
        os.write(feeding, DATA[:sent])
        assert wait_until(lambda: [len(landed) for landed in landing(tmp_path)] == [sent])
    except BaseException:
        os.close(feeding)  # the script ends with its stdin: no process outlives the test
        script.wait(timeout=60)
        raise
    return target, script, feeding


def put(target: Path, path: str, mode: str = "") -> None:
    script = put_script(target, path, mode=mode)
    _, errors = script.communicate(DATA, timeout=60)
    assert script.returncode == 0, errors


@pytest.mark.parametrize("without", [(), ("mktemp",)])
def test_the_bytes_fill_a_private_folder_named_by_no_word_of_the_command_line(
    tmp_path: Path, without: tuple[str, ...]
) -> None:
    """By mktemp -d, or without it by /dev/urandom: a random name the command line,
    which every user of the server reads, does not give away."""
    target, script, feeding = put_under_way(tmp_path, 10, without)
    try:
        (landing,) = landing_files(tmp_path)
        assert re.fullmatch(r"\.fabric-mux-[0-9A-Za-z]{10,16}", landing.name)
        assert stat.S_IMODE(landing.stat().st_mode) == 0o700
        assert [(f.name, stat.S_IMODE(f.stat().st_mode)) for f in landing.iterdir()] == [
            ("f", 0o600)
        ]
        os.write(feeding, DATA[10:])
    finally:
        os.close(feeding)
        script.wait(timeout=60)
    assert script.returncode == 0
    assert target.read_bytes() == DATA and landing_files(tmp_path) == []


def test_with_no_way_to_a_random_name_the_bytes_go_straight_in(tmp_path: Path) -> None:
    target = tmp_path / "app.env"
    target.write_bytes(b"old\n")
    inode = target.stat().st_ino
    put(target, tools(tmp_path, without=("mktemp", "od")))
    assert target.read_bytes() == DATA and target.stat().st_ino == inode
    assert landing_files(tmp_path) == []


@pytest.mark.parametrize("new", [True, False])
def test_a_link_put_in_place_of_the_landing_folder_once_entered_is_not_followed(
    tmp_path: Path, new: bool
) -> None:
    """Another user who may write the target's folder renames the landing folder
    and puts a link to a folder of the put's account there, while the bytes come:
    the script holds its own folder, and nothing it opens or changes is theirs to
    choose."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "f").write_bytes(b"victim\n")
    (victim / "f").chmod(0o644)
    target = tmp_path / "app.env"
    if not new:
        target.write_bytes(b"old\n")
    swap = f"cd {tmp_path} && for d in .fabric-mux-*; do mv $d moved && ln -s {victim} $d; done"
    put(target, tools(tmp_path, before={"wc": swap}))
    assert target.read_bytes() == DATA
    assert (victim / "f").read_bytes() == b"victim\n"
    assert stat.S_IMODE((victim / "f").stat().st_mode) == 0o644
    assert sorted(p.name for p in victim.iterdir()) == ["f"]


@pytest.mark.parametrize("program", ["wc", "chmod"])
def test_a_link_put_in_place_of_the_old_file_is_neither_written_nor_widened(
    tmp_path: Path, program: str
) -> None:
    """Another user who may write the target's folder renames the old file and puts a
    link to a private file of the put's account in its place, once the bytes have
    landed (``wc`` counts them just before they are copied in) or just before the mode
    is set: the script holds the file it opened first, and the linked file keeps its
    bytes and its mode."""
    victim = tmp_path / "secret.key"
    victim.write_bytes(b"victim\n")
    victim.chmod(0o600)
    target = tmp_path / "app.env"
    target.write_bytes(b"old\n")
    target.chmod(0o640)
    inode = target.stat().st_ino
    swap = f"[ -h {target} ] || {{ mv {target} {tmp_path}/moved && ln -s {victim} {target}; }}"
    if program == "chmod":
        swap = f'[ "$1" != 644 ] || {{ {swap}; }}'
    put(target, tools(tmp_path, before={program: swap}), mode="644")
    assert target.is_symlink()
    assert victim.read_bytes() == b"victim\n"
    assert stat.S_IMODE(victim.stat().st_mode) == 0o600
    moved = tmp_path / "moved"
    assert moved.stat().st_ino == inode and moved.read_bytes() == DATA
    assert stat.S_IMODE(moved.stat().st_mode) == 0o644


@pytest.mark.parametrize("inside", ["a file", "nothing, open to others"])
def test_a_link_put_in_place_of_the_landing_folder_before_it_is_entered_is_refused(
    tmp_path: Path, inside: str
) -> None:
    """The folder ``cd -P`` lands in is used only if it is new, empty and closed to
    others; else the bytes go straight in, as SFTP writes them."""
    victim = tmp_path / "victim"
    victim.mkdir()
    if inside == "a file":
        (victim / "f").write_bytes(b"victim\n")
    else:
        victim.chmod(0o755)
    before = sorted(p.name for p in victim.iterdir())
    target = tmp_path / "app.env"
    target.write_bytes(b"old\n")
    swap = f'd=$({shutil.which("mktemp")} "$@") && rmdir $d && ln -s {victim} $d && echo $d && exit'
    put(target, tools(tmp_path, before={"mktemp": swap}))
    assert target.read_bytes() == DATA
    assert sorted(p.name for p in victim.iterdir()) == before


@pytest.mark.parametrize("without", [(), ("mktemp",)])
def test_a_put_ended_as_its_landing_folder_is_made_leaves_none(
    tmp_path: Path, without: tuple[str, ...]
) -> None:
    """A signal that comes while the folder is made runs the script's trap once that
    program ends: the folder is known by then, and goes."""
    target = tmp_path / "app.env"
    target.write_bytes(b"old\n")
    maker = "mkdir" if without else "mktemp"
    script = put_script(target, tools(tmp_path, without, before={maker: "kill -TERM $PPID"}))
    script.communicate(DATA, timeout=60)
    assert script.returncode != 0
    assert target.read_bytes() == b"old\n"
    assert landing_files(tmp_path) == []


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


def test_a_copy_in_that_fails_keeps_the_bytes_and_names_where(tmp_path: Path) -> None:
    """Out of room as the bytes are copied into the old file (which then holds what
    the copy reached): the landing file, which holds them whole, is kept and named."""
    target = tmp_path / "app.env"
    target.write_bytes(b"old\n")
    full = 'case $1 in f) echo "cat: write error: No space left on device" >&2; exit 1 ;; esac'
    script = put_script(target, tools(tmp_path, before={"cat": full}))
    _, errors = script.communicate(DATA, timeout=60)
    assert script.returncode == 1
    (folder,) = landing_files(tmp_path)
    assert f"\0fabric-mux-kept {folder}/f\0".encode() in errors
    assert (folder / "f").read_bytes() == DATA
