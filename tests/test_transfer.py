"""put and get in one session each, held against stock Fabric's Transfer (SFTP) on the
same connection: same Result, same files, same modes, same errors."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import pwd
import secrets
import shutil
import stat
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import fabric
import pytest
from conftest import Flag
from fabric.transfer import Result, Transfer
from hypothesis import given
from hypothesis import strategies as st
from waiting import wait_until

from fabric_mux import MuxConnection
from fabric_mux.marked import Between, Cksum
from fabric_mux.pytest_plugin import SshdFactory
from fabric_mux.testing import SshServer

#: Remote folders of this run (runs of the suite may share an account).
OURS, STOCK = f"fmux-ours-{os.getpid()}", f"fmux-stock-{os.getpid()}"


@pytest.fixture
def c(sshd: SshServer, config: fabric.Config) -> Iterator[MuxConnection]:
    connection = MuxConnection(sshd.alias, config=config)
    for folder in (OURS, STOCK):
        connection.run(f"rm -rf {folder} && mkdir -p {folder}/sub", hide=True)
    yield connection
    connection.run(f"rm -rf {OURS} {STOCK}", hide=True)


def remote_state(c: MuxConnection, path: str) -> tuple[str, str]:
    """(mode, content) of a remote file, as the remote sees them."""
    shown = c.run(f"ls -ldn -- {path} | cut -c1-10; cat -- {path}", hide=True).stdout
    mode, _, content = shown.partition("\n")
    return mode, content


def same_result(ours: Result, stock: Result) -> None:
    assert ours.remote.replace(OURS, STOCK) == stock.remote
    assert ours.orig_remote == (stock.orig_remote or "").replace(STOCK, OURS) or (
        ours.orig_remote is stock.orig_remote
    )
    assert ours.connection is stock.connection


@pytest.mark.parametrize(
    "remote",
    [
        "{folder}/named.txt",
        "{folder}/sub",
        "{folder}/sub/",
        "/tmp/{folder}-abs.txt",
        "{folder}/-dash",
    ],
)
def test_put_of_a_file_lands_where_stock_puts_it(
    c: MuxConnection, tmp_path: Path, remote: str
) -> None:
    local = tmp_path / "source.txt"
    local.write_text("payload\n")
    local.chmod(0o640)
    stock = Transfer(c).put(str(local), remote.format(folder=STOCK))
    ours = c.put(str(local), remote.format(folder=OURS))
    same_result(ours, stock)
    assert ours.local == stock.local == str(local)
    assert (
        remote_state(c, ours.remote) == remote_state(c, stock.remote) == ("-rw-r-----", "payload\n")
    )
    c.run(f"rm -f /tmp/{OURS}-abs.txt /tmp/{STOCK}-abs.txt", hide=True)


def test_put_with_no_remote_goes_home_under_the_local_name(
    c: MuxConnection, tmp_path: Path
) -> None:
    local = tmp_path / f"{OURS}-home.txt"
    local.write_text("home\n")
    result = c.put(str(local))
    home = c.run("pwd -P", hide=True).stdout.strip()
    assert result.remote == f"{home}/{OURS}-home.txt"
    assert remote_state(c, result.remote)[1] == "home\n"
    c.run(f"rm -f {result.remote}", hide=True)


@pytest.mark.parametrize(
    "make",
    # ASCII text: paramiko counts characters, so stock's own size check
    # fails for any other (ours sends UTF-8 and counts bytes).
    [lambda: io.StringIO("text\n"), lambda: io.BytesIO(b"\x00bytes\xff")],
    ids=["text", "bytes"],
)
def test_put_of_a_file_like_object_matches_stock(c: MuxConnection, make: Callable[[], Any]) -> None:
    stream = make()
    stream.read(2)  # the position is restored afterwards, as stock does
    stock = Transfer(c).put(stream, f"{STOCK}/flo")
    assert stream.tell() == 2
    ours = c.put(stream, f"{OURS}/flo")
    assert stream.tell() == 2
    same_result(ours, stock)
    assert remote_state(c, ours.remote)[1] == remote_state(c, stock.remote)[1]


@pytest.mark.parametrize("name", ["flo-named", "/tmp/{folder}-flo-absolute"])
def test_a_named_file_like_object_into_a_folder_lands_where_stock_puts_it(
    c: MuxConnection, name: str
) -> None:
    results = []
    for put, folder in ((Transfer(c).put, STOCK), (c.put, OURS)):
        stream = io.BytesIO(b"named")
        stream.name = name.format(folder=folder)
        results.append(put(stream, f"{folder}/sub"))
        assert remote_state(c, results[-1].remote)[1] == "named"
    stock, ours = results
    same_result(ours, stock)
    c.run(f"rm -f /tmp/{OURS}-flo-absolute /tmp/{STOCK}-flo-absolute", hide=True)


class HaltingHalfway(io.BytesIO):
    """Bytes whose second half is read only once :attr:`go` is set."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.half = len(data) // 2
        self.go = threading.Event()

    def read(self, size: int | None = -1) -> bytes:
        if self.tell() < self.half:
            return super().read(self.half - self.tell())
        assert self.go.wait(60)
        return super().read(size)


def landing_files(folder: Path) -> list[Path]:
    """The landing folders of puts under way in ``folder``."""
    return list(folder.glob(".fabric-mux-*"))


def landing(folder: Path) -> list[Path]:
    """The files filling in them."""
    return [f for d in landing_files(folder) for f in d.glob("f")]


def test_a_new_remote_file_is_private_while_a_put_fills_it(c: MuxConnection, noisy: Path) -> None:
    # The server runs here: its files are ours to look at.
    data = os.urandom(200_000)
    filling = HaltingHalfway(data)
    remote = noisy / "filling.bin"
    putting = threading.Thread(target=c.put, args=(filling, str(remote)))
    putting.start()
    try:
        # The bytes land beside it, in a folder and file nobody else reads; it is not
        # there yet.
        assert wait_until(lambda: any(f.stat().st_size > 0 for f in landing(noisy)), deadline=30)
        (folder,) = landing_files(noisy)
        (filling_file,) = landing(noisy)
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert stat.S_IMODE(filling_file.stat().st_mode) == 0o600
        assert not remote.exists()
    finally:
        filling.go.set()
        putting.join(timeout=60)
    assert remote.read_bytes() == data
    assert landing_files(noisy) == []
    # Then the mode SFTP gives a new file (a file-like object's is not preserved).
    Transfer(c).put(io.BytesIO(data), str(noisy / "stock.bin"))
    assert remote.stat().st_mode == (noisy / "stock.bin").stat().st_mode


class BreakingHalfway(io.BytesIO):
    """Bytes whose reading fails halfway, as a source that dies does."""

    def read(self, size: int | None = -1) -> bytes:
        half = len(self.getbuffer()) // 2
        if self.tell() >= half:
            raise OSError(errno.EIO, "the source broke off")
        return super().read(half - self.tell() if size is None or size < 0 else size)


def test_a_put_that_breaks_off_leaves_the_old_file_whole(
    c: MuxConnection, noisy: Path, sshd_user: str
) -> None:
    remote = noisy / "app.env"
    remote.write_bytes(b"SECRET=old\n")
    remote.chmod(0o640)
    shutil.chown(remote, sshd_user)
    with pytest.raises(OSError, match="the source broke off"):
        c.put(BreakingHalfway(os.urandom(300_000)), str(remote))
    # The remote command sees the end of its stdin, as at the end of a whole put.
    assert wait_until(lambda: landing_files(noisy) == [], deadline=30)
    assert remote.read_bytes() == b"SECRET=old\n"
    assert stat.S_IMODE(remote.stat().st_mode) == 0o640


def test_a_put_over_a_file_keeps_its_inode_owner_mode_and_links(
    c: MuxConnection, noisy: Path, sshd_user: str
) -> None:
    """A file root owns that the account may write (its group's): the new bytes
    go into it, as SFTP writes them; a file put in its place would be the
    account's own, and its other names would keep the old bytes."""
    remote = noisy / "shared.conf"
    remote.write_bytes(b"old\n")
    os.chown(remote, 0, pwd.getpwnam(sshd_user).pw_gid)
    remote.chmod(0o660)
    os.link(remote, noisy / "other-name.conf")
    before = remote.stat()
    c.put(io.BytesIO(b"new bytes\n"), str(remote))
    after = remote.stat()
    assert (after.st_ino, after.st_uid, after.st_gid, after.st_mode) == (
        before.st_ino,
        before.st_uid,
        before.st_gid,
        before.st_mode,
    )
    assert (noisy / "other-name.conf").read_bytes() == b"new bytes\n"
    assert landing_files(noisy) == []


def test_a_put_into_a_file_in_a_folder_it_cannot_write_goes_straight_in(
    c: MuxConnection, noisy: Path, sshd_user: str
) -> None:
    """No landing file can be made there: the bytes go straight in, as SFTP's do."""
    folder = noisy / "locked"
    folder.mkdir(mode=0o755)  # root's: the account may not make files in it
    remote = folder / "writable.txt"
    remote.write_bytes(b"old\n")
    shutil.chown(remote, sshd_user)
    c.put(io.BytesIO(b"new\n"), str(remote))
    assert remote.read_bytes() == b"new\n"


def test_a_text_file_like_object_is_put_as_utf_8(c: MuxConnection, noisy: Path) -> None:
    c.put(io.StringIO("naïve café\n" * 1000), str(noisy / "text.txt"))
    assert (noisy / "text.txt").read_bytes() == "naïve café\n".encode() * 1000


@pytest.mark.parametrize("existing", [False, True], ids=["new", "existing"])
def test_put_without_preserve_mode_leaves_the_mode_stock_leaves(
    c: MuxConnection, tmp_path: Path, existing: bool
) -> None:
    local = tmp_path / "tool.sh"
    local.write_text("#!/bin/sh\n")
    local.chmod(0o750)
    modes = []
    for put, folder in ((Transfer(c).put, STOCK), (c.put, OURS)):
        if existing:
            c.run(f"touch {folder}/tool.sh && chmod 604 {folder}/tool.sh", hide=True)
        put(str(local), f"{folder}/tool.sh", preserve_mode=False)
        modes.append(remote_state(c, f"{folder}/tool.sh"))
    assert modes[0] == modes[1]
    # The old file's mode, or the remote umask's for a new one: never the local 0750.
    assert "x" not in modes[1][0] and modes[1][1] == "#!/bin/sh\n"
    assert not existing or modes[1][0] == "-rw----r--"


def test_a_nameless_file_like_object_into_a_folder_is_refused_like_stock(c: MuxConnection) -> None:
    for put, folder in ((Transfer(c).put, STOCK), (c.put, OURS)):
        with pytest.raises(ValueError, match=r"non-empty \.name attribute"):
            put(io.BytesIO(b"x"), f"{folder}/sub")


@pytest.mark.parametrize(
    "local",
    # {dirname} is the remote folder made absolute (the remote home joined).
    [None, "out/", "out/renamed.txt", "{host}-{basename}", "out{dirname}/{basename}"],
)
def test_get_lands_where_stock_gets_it(
    c: MuxConnection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, local: str | None
) -> None:
    for folder in (OURS, STOCK):
        c.run(f"printf 'remote\\n' > {folder}/file.txt && chmod 604 {folder}/file.txt", hide=True)
    results = []
    for get, folder in ((Transfer(c).get, STOCK), (c.get, OURS)):
        where = tmp_path / folder
        where.mkdir()
        monkeypatch.chdir(where)
        result = get(f"{folder}/file.txt", local)
        results.append(result)
        assert Path(result.local).read_text() == "remote\n"
        assert stat.S_IMODE(os.stat(result.local).st_mode) == 0o604
    stock, ours = results
    same_result(ours, stock)
    assert os.path.relpath(ours.local, tmp_path / OURS).replace(OURS, STOCK) == os.path.relpath(
        stock.local, tmp_path / STOCK
    )


def test_the_remote_home_for_dirname_is_asked_once_a_master(
    c: MuxConnection, tmp_path: Path
) -> None:
    c.run(f"echo x > {OURS}/file.txt", hide=True)
    requests = c.mux_master.requests
    before = requests.copy()
    first = c.get(f"{OURS}/file.txt", f"{tmp_path}/first{{dirname}}/{{basename}}")
    assert requests - before == {"new session": 2}  # the home, then the file
    before = requests.copy()
    again = MuxConnection(c.original_host, config=c.config).get(
        f"{OURS}/file.txt", f"{tmp_path}/again{{dirname}}/{{basename}}"
    )
    assert (requests - before)["new session"] == 1  # another connection, the same master
    home = c.run("pwd -P", hide=True).stdout.strip()
    assert first.local == f"{tmp_path}/first{home}/{OURS}/file.txt"
    assert again.local == f"{tmp_path}/again{home}/{OURS}/file.txt"


def test_get_into_what_is_not_a_regular_file(c: MuxConnection, tmp_path: Path) -> None:
    c.run(f"printf 'to a pipe\\n' > {OURS}/file.txt && chmod 600 {OURS}/file.txt", hide=True)
    null_mode = os.stat(os.devnull).st_mode
    result = c.get(f"{OURS}/file.txt", os.devnull)
    assert result.local == os.devnull
    assert os.stat(os.devnull).st_mode == null_mode  # never given the remote's mode
    assert _get_through_a_fifo(c, f"{OURS}/file.txt", tmp_path / "fifo") == b"to a pipe\n"
    assert stat.S_ISFIFO(os.stat(tmp_path / "fifo").st_mode)


def _get_through_a_fifo(c: MuxConnection, remote: str, fifo: Path) -> bytes:
    """What a get into a new fifo at ``fifo`` brought, as its reader read it."""
    os.mkfifo(fifo)
    read: list[bytes] = []
    reader = threading.Thread(target=lambda: read.append(fifo.read_bytes()))
    reader.start()
    c.get(remote, str(fifo))
    reader.join(timeout=60)
    assert len(read) == 1
    return read[0]


@pytest.mark.parametrize(
    ("operation", "error"),
    [
        (lambda mover, t, f: mover.get(f"{f}/missing", str(t / "x")), FileNotFoundError),
        (lambda mover, t, f: mover.put(str(t / "local"), f"{f}/no/dir/f"), FileNotFoundError),
        (lambda mover, t, f: mover.put(str(t / "local"), "/etc/fmux-no"), PermissionError),
    ],
    ids=["get missing", "put into a missing folder", "put where not allowed"],
)
def test_errors_are_the_oserrors_stock_raises(
    c: MuxConnection, tmp_path: Path, operation: Callable[..., Any], error: type[OSError]
) -> None:
    (tmp_path / "local").write_text("x")
    for mover, folder in ((Transfer(c), STOCK), (c, OURS)):
        (tmp_path / "x").unlink(missing_ok=True)  # stock's failed get leaves an empty one
        with pytest.raises(error):
            operation(mover, tmp_path, folder)
    assert not (tmp_path / "x").exists()  # ours leaves nothing behind


# -- one session, one slot -------------------------------------------------------------


def test_a_put_and_a_get_cost_one_session_each_and_nothing_else(
    c: MuxConnection, tmp_path: Path
) -> None:
    local = tmp_path / "f.bin"
    local.write_bytes(os.urandom(10_000))
    c.run("true")
    requests = c.mux_master.requests
    before = requests.copy()
    c.put(str(local), f"{OURS}/f.bin")
    assert requests - before == {"new session": 1}
    before = requests.copy()
    c.get(f"{OURS}/f.bin", str(tmp_path / "back.bin"))
    assert requests - before == {"new session": 1}
    before = requests.copy()
    c.put(io.BytesIO(b"x" * 10_000), f"{OURS}/flo.bin")
    assert requests - before == {"new session": 1}
    before = requests.copy()
    c.run("true")
    assert requests - before == {"new session": 1}


def test_transfers_need_one_slot_under_max_sessions_1(
    sshd_factory: SshdFactory, control_dir: Path, tmp_path: Path
) -> None:
    sshd = sshd_factory(sshd_options=["MaxSessions 1"])
    c = MuxConnection(
        sshd.alias, config=sshd.fabric_config({"mux": {"control_dir": str(control_dir)}})
    )
    local = tmp_path / "f.txt"
    local.write_text("one slot\n")
    c.put(str(local), "fmux-one-slot.txt")
    c.get("fmux-one-slot.txt", str(tmp_path / "back.txt"))
    assert (tmp_path / "back.txt").read_text() == "one slot\n"
    c.run("rm -f fmux-one-slot.txt")


def test_an_account_without_a_shell_transfers_over_sftp(
    sshd_factory: SshdFactory, sshd_user: str, control_dir: Path, tmp_path: Path
) -> None:
    sshd = sshd_factory(sshd_options=[f"Match User {sshd_user}", "    ForceCommand internal-sftp"])
    c = MuxConnection(
        sshd.alias, config=sshd.fabric_config({"mux": {"control_dir": str(control_dir)}})
    )
    local = tmp_path / "f.txt"
    local.write_text("over sftp\n")
    result = c.put(str(local), "fmux-sftp-only.txt")
    assert result.remote.endswith("/fmux-sftp-only.txt")
    c.get("fmux-sftp-only.txt", str(tmp_path / "back.txt"))
    assert (tmp_path / "back.txt").read_text() == "over sftp\n"
    c.sftp().remove("fmux-sftp-only.txt")
    assert sshd.logins() == 1


def test_text_that_is_not_ascii_arrives_as_utf8(c: MuxConnection) -> None:
    c.put(io.StringIO("é€\n"), f"{OURS}/utf8.txt")
    assert c.run(f"cat {OURS}/utf8.txt", hide=True).stdout == "é€\n"


def test_no_byte_of_a_put_is_in_the_command_it_runs(
    c: MuxConnection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every size, small ones most of all: no file is ever written into a command line.
    secret = secrets.token_hex(16)
    commands: list[str] = []
    opened = c.open_session

    def recording(command: str, fds: Sequence[int], **flags: Any) -> Any:
        commands.append(command)
        return opened(command, fds, **flags)

    monkeypatch.setattr(c, "open_session", recording)
    for size in (len(secret), 10_000, 48 * 1024, 200_000):
        data = (secret * (size // len(secret) + 1))[:size].encode()
        local = tmp_path / f"{size}.txt"
        local.write_bytes(data)
        c.put(str(local), f"{OURS}/{size}.txt")
        c.put(io.BytesIO(data), f"{OURS}/{size}.bytes")
        c.put(io.StringIO(data.decode()), f"{OURS}/{size}.text")
        for suffix in ("txt", "bytes", "text"):
            assert remote_state(c, f"{OURS}/{size}.{suffix}")[1] == data.decode()
    assert len(commands) == 12 + 12  # the puts, and the reads back
    assert not [command for command in commands if secret in command]


def _processes_showing(secrets_: Sequence[bytes]) -> list[str]:
    """Every process of this machine whose command line or environment holds one of
    ``secrets_`` (the servers run here; as root, every process can be read)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        for part in ("cmdline", "environ"):
            try:
                shown = Path(entry.path, part).read_bytes()
            except OSError:
                continue  # ended meanwhile
            if any(secret in shown for secret in secrets_):
                found.append(f"{entry.name}/{part}: {shown[:200]!r}")
    return found


def test_no_byte_of_a_put_shows_in_any_process_while_it_runs(
    c: MuxConnection, sshd: SshServer, flag: Flag
) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root can read every process's environment")  # CI runs as root
    in_file, in_object = secrets.token_hex(16).encode(), secrets.token_hex(16).encode()
    local = flag.path.parent / "secret.txt"
    local.write_bytes(b"top secret: " + in_file + b"\n")
    local.chmod(0o600)
    # The puts go into fifos: each remote command waits at the fifo's open, its
    # command line and environment in /proc, until the test reads the fifo.
    user = pwd.getpwnam(sshd.user)
    fifos = [flag.path.parent / f"fifo{n}" for n in range(4)]
    for fifo in fifos:
        os.mkfifo(fifo)
        os.chown(fifo, user.pw_uid, user.pw_gid)
    seen: list[str] = []
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.005):
            seen.extend(_processes_showing([in_file, in_object]))

    watcher = threading.Thread(target=watch)
    watcher.start()
    puts = [threading.Thread(target=c.put, args=(str(local), str(fifo))) for fifo in fifos[:3]] + [
        threading.Thread(target=c.put, args=(io.BytesIO(in_object), str(fifos[3])))
    ]
    try:
        for put in puts:
            put.start()
        assert wait_until(lambda: _remote_commands_naming(fifos), deadline=30)
        seen.extend(_processes_showing([in_file, in_object]))
        received = [_serve_fifo(fifo) for fifo in fifos]
        for put in puts:
            put.join(timeout=60)
        seen.extend(_processes_showing([in_file, in_object]))
    finally:
        done.set()
        watcher.join()
    assert seen == []
    assert received == [local.read_bytes()] * 3 + [in_object]


def _remote_commands_naming(fifos: Sequence[Path]) -> bool:
    """Whether, for each of ``fifos``, a process names it in its command line: the
    remote command is there, held at the fifo's open."""
    shown = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                shown.append(Path(entry.path, "cmdline").read_bytes())
    return all(any(str(fifo).encode() in line for line in shown) for fifo in fifos)


def _serve_fifo(fifo: Path) -> bytes:
    """Read what a put writes into ``fifo``, then write it back for the put's own
    count of what landed (``wc -c`` opens it again); what was read."""
    data = fifo.read_bytes()
    fifo.write_bytes(data)
    return data


def test_a_small_put_reports_its_progress_once_whole(c: MuxConnection, tmp_path: Path) -> None:
    local = tmp_path / "small.txt"
    local.write_bytes(b"x" * 100)
    seen: list[tuple[int, int]] = []
    c.put(str(local), f"{OURS}/small.txt", progress=lambda done, total: seen.append((done, total)))
    c.put(io.BytesIO(b"y" * 50), f"{OURS}/small.bin", progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (50, 50)
    assert (100, 100) in seen
    assert all(done <= total for done, total in seen if total)


def test_a_failed_get_leaves_the_old_file_whole_and_nothing_beside_it(
    c: MuxConnection, tmp_path: Path
) -> None:
    old = b"the old file\n" * 1000
    local = tmp_path / "kept.txt"
    local.write_bytes(old)
    local.chmod(0o640)
    # ls says 0 bytes, cat sends more: the get fails its size check after the bytes came.
    with pytest.raises(OSError, match="size mismatch in get"):
        c.get("/proc/version", str(local))
    assert local.read_bytes() == old
    assert stat.S_IMODE(local.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.txt"]
    # A get that works replaces it whole, in one rename.
    c.run(f"printf 'new\\n' > {OURS}/new.txt && chmod 604 {OURS}/new.txt", hide=True)
    inode = local.stat().st_ino
    c.get(f"{OURS}/new.txt", str(local))
    assert local.read_bytes() == b"new\n" and local.stat().st_ino != inode
    assert stat.S_IMODE(local.stat().st_mode) == 0o604
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.txt"]


def test_get_through_a_link_writes_the_file_it_names_as_stock_does(
    c: MuxConnection, tmp_path: Path
) -> None:
    c.run(f"printf 'new\\n' > {OURS}/new.txt", hide=True)
    (tmp_path / "real.txt").write_text("old\n")
    inode = (tmp_path / "real.txt").stat().st_ino
    (tmp_path / "link.txt").symlink_to("real.txt")
    c.get(f"{OURS}/new.txt", str(tmp_path / "link.txt"))
    assert (tmp_path / "link.txt").is_symlink()
    # Opened through the link by the kernel, and written in place.
    assert (tmp_path / "real.txt").read_text() == "new\n"
    assert (tmp_path / "real.txt").stat().st_ino == inode
    (tmp_path / "gone.txt").symlink_to("made.txt")  # a link to nothing: open() makes it
    c.get(f"{OURS}/new.txt", str(tmp_path / "gone.txt"))
    assert (tmp_path / "made.txt").read_text() == "new\n"


def test_get_brings_the_exact_bytes_when_the_login_shell_prints_first(
    sshd_factory: SshdFactory, control_dir: Path, tmp_path: Path
) -> None:
    # As a .bashrc with an echo does: every command's stdout starts with it.
    banner = 'ForceCommand printf "Welcome to web1\\n"; eval "$SSH_ORIGINAL_COMMAND"'
    server = sshd_factory(sshd_options=[banner])
    config = server.fabric_config({"mux": {"control_dir": str(control_dir)}})
    c = MuxConnection(server.alias, config=config)
    data = os.urandom(300_000)
    c.put(io.BytesIO(data), f"/tmp/{OURS}-banner.bin")
    try:
        got = c.get(f"/tmp/{OURS}-banner.bin", str(tmp_path / "got.bin"))
        assert Path(got.local).read_bytes() == data
        assert sorted(p.name for p in tmp_path.iterdir()) == ["got.bin"]
    finally:
        c.run(f"rm -f /tmp/{OURS}-banner.bin", hide=True)
    assert server.logins() == 1


@pytest.mark.parametrize("size", [0, 1, 300_000])
def test_get_into_a_file_takes_one_session_when_the_login_shell_prints_anew_each_time(
    sshd_factory: SshdFactory, control_dir: Path, tmp_path: Path, size: int
) -> None:
    # As a .bashrc that prints the time: what comes first differs at every login.
    banner = 'ForceCommand printf "Welcome, session %s at %s\\n" "$$" "$(date +%N)"; '
    server = sshd_factory(sshd_options=[banner + 'eval "$SSH_ORIGINAL_COMMAND"'])
    config = server.fabric_config({"mux": {"control_dir": str(control_dir)}})
    c = MuxConnection(server.alias, config=config)
    data = os.urandom(size)
    c.put(io.BytesIO(data), f"/tmp/{OURS}-anew.bin")
    said = [c.run("true", hide=True).stdout for _ in range(2)]
    assert said[0] != said[1] and said[0].startswith("Welcome, session ")
    requests = c.mux_master.requests
    try:
        for local in ("got.bin", "got.bin"):  # a new file, then one replaced
            before = requests.copy()
            got = c.get(f"/tmp/{OURS}-anew.bin", str(tmp_path / local))
            assert requests - before == {"new session": 1}
            assert Path(got.local).read_bytes() == data
        assert sorted(p.name for p in tmp_path.iterdir()) == ["got.bin"]
    finally:
        c.run(f"rm -f /tmp/{OURS}-anew.bin", hide=True)


@given(
    head=st.binary(max_size=200),
    data=st.binary(max_size=300),
    tail=st.binary(max_size=100),
    cuts=st.lists(st.integers(min_value=0, max_value=700), max_size=8),
)
def test_only_what_comes_between_the_markers_is_passed_on_however_the_bytes_are_cut(
    head: bytes, data: bytes, tail: bytes, cuts: list[int]
) -> None:
    marker = b"\0" + b"0123456789abcdef" * 2 + b"\0"
    # What came first may end with any part of it; what comes after, begin with any.
    data = data.replace(marker, b"")
    stream = head.replace(marker, b"") + marker + data + marker + tail
    passed: list[bytes] = []
    into = Between(marker, passed.append)
    edges = sorted({0, len(stream), *(cut for cut in cuts if cut < len(stream))})
    for start, end in zip(edges, edges[1:]):
        into.write(stream[start:end])
    assert b"".join(passed) == data
    assert into.passed == len(data) and into.ended
    assert all(passed)  # no empty writes


def test_what_came_first_may_end_with_the_token_itself() -> None:
    # A shell that prints the command line it runs, with no newline after it.
    token = b"0123456789abcdef" * 2
    marker = b"\0" + token + b"\0"
    passed: list[bytes] = []
    into = Between(marker, passed.append)
    into.write(b"/bin/sh -c '...' sh /etc/motd " + token + marker + b"data" + marker + b"bye\n")
    assert passed == [b"data"]


def test_without_the_marker_nothing_is_passed_on() -> None:
    passed: list[bytes] = []
    into = Between(b"markermarker", passed.append)
    for chunk in (b"cat: /nope: No such file", b"marker", b"marke"):
        into.write(chunk)
    assert passed == []
    assert into.passed == 0 and not into.ended


@pytest.mark.parametrize("size", [0, 1, 12, 255, 256, 65536, 1_000_003])
def test_the_checksum_is_posix_cksum(size: int) -> None:
    data = os.urandom(size)
    said = subprocess.run(["cksum"], input=data, capture_output=True, check=True).stdout.split()
    summed = Cksum()
    for start in range(0, size, 4099):  # in pieces, as the bytes are moved
        summed.update(data[start : start + 4099])
    assert [summed.value(), size] == [int(said[0]), int(said[1])]


@pytest.mark.parametrize(
    "login_shell",
    [
        'printf "Welcome to web1\\n"',
        # A shell that echoes what it runs: the get's token is in it, not its NULs.
        'printf "%s\\n" "$SSH_ORIGINAL_COMMAND"',
    ],
    ids=["banner", "echoes-the-command"],
)
def test_get_into_a_file_like_object_brings_the_exact_bytes_when_the_login_shell_prints_first(
    sshd_factory: SshdFactory, control_dir: Path, tmp_path: Path, login_shell: str
) -> None:
    server = sshd_factory(
        sshd_options=[f'ForceCommand {login_shell}; eval "$SSH_ORIGINAL_COMMAND"']
    )
    config = server.fabric_config({"mux": {"control_dir": str(control_dir)}})
    c = MuxConnection(server.alias, config=config)
    data = os.urandom(300_000)
    c.put(io.BytesIO(data), f"/tmp/{OURS}-banner-fo.bin")
    try:
        into = io.BytesIO()
        c.get(f"/tmp/{OURS}-banner-fo.bin", into)
        assert into.getvalue() == data
        # Through the pump too: a local path that is not a regular file.
        assert _get_through_a_fifo(c, f"/tmp/{OURS}-banner-fo.bin", tmp_path / "fifo") == data
    finally:
        c.run(f"rm -f /tmp/{OURS}-banner-fo.bin", hide=True)
    assert server.logins() == 1


def _server_whose_login_shell(
    sshd_factory: SshdFactory, control_dir: Path, login_shell: str
) -> MuxConnection:
    """A connection to a server whose every command first runs ``login_shell``, as an
    account's shell start-up does."""
    server = sshd_factory(
        sshd_options=[f'ForceCommand {login_shell}; eval "$SSH_ORIGINAL_COMMAND"']
    )
    return MuxConnection(
        server.alias, config=server.fabric_config({"mux": {"control_dir": str(control_dir)}})
    )


@pytest.fixture
def noisy(sshd_user: str) -> Iterator[Path]:
    """A folder the server's account writes in: the flags a login shell's job and
    the get's command use to take turns."""
    folder = Path(tempfile.mkdtemp(prefix="fmn-", dir="/tmp"))
    folder.chmod(0o755)
    shutil.chown(folder, sshd_user)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("into", ["file", "file-like"])
def test_a_get_never_succeeds_with_what_a_login_shells_job_printed_among_the_bytes(
    sshd_factory: SshdFactory, control_dir: Path, tmp_path: Path, noisy: Path, into: str
) -> None:
    # The login shell leaves a job that prints once the get's bytes are half sent
    # (as `(sleep 1; echo 'update available') &` in a .bashrc would, given time);
    # cat is made to wait at half way until it has printed.
    half, printed = noisy / "half", noisy / "printed"
    job = (
        f"(while [ ! -e {half} ]; do sleep 0.02; done; echo 'update available'; touch {printed}) &"
    )
    bin_ = noisy / "bin"
    bin_.mkdir()
    (bin_ / "cat").write_text(
        "#!/bin/sh\n"
        'head -c 100000 "$2"\n'
        f"touch {half}\n"
        f"while [ ! -e {printed} ]; do sleep 0.02; done\n"
        'exec tail -c +100001 "$2"\n'
    )
    (bin_ / "cat").chmod(0o755)
    login_shell = (
        f'case "$SSH_ORIGINAL_COMMAND" in *fmux-noisy*) PATH={bin_}:$PATH; export PATH; '
        f"{job} ;; esac"
    )
    c = _server_whose_login_shell(sshd_factory, control_dir, login_shell)
    data = os.urandom(300_000)
    remote = noisy / "fmux-noisy.bin"
    remote.write_bytes(data)
    remote.chmod(0o644)
    local = tmp_path / "kept.bin"
    local.write_bytes(b"the old bytes\n")
    with pytest.raises(OSError, match=r"^size mismatch in get!  300017 != 300000$"):
        c.get(str(remote), str(local) if into == "file" else io.BytesIO())
    assert printed.exists()  # it printed among the bytes, not after them
    assert local.read_bytes() == b"the old bytes\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.bin"]


@pytest.mark.parametrize("size", [0, 6, 300_000])
def test_get_brings_the_exact_bytes_when_the_login_shell_prints_after_the_command(
    sshd_factory: SshdFactory, control_dir: Path, tmp_path: Path, size: int
) -> None:
    c = _server_whose_login_shell(sshd_factory, control_dir, "trap 'echo bye' EXIT")
    data = os.urandom(size)
    c.put(io.BytesIO(data), f"/tmp/{OURS}-bye.bin")
    try:
        assert c.run("true", hide=True).stdout == "bye\n"
        for local in ("got.bin", "got.bin"):  # a new file, then one replaced
            got = c.get(f"/tmp/{OURS}-bye.bin", str(tmp_path / local))
            assert Path(got.local).read_bytes() == data
        into = io.BytesIO()
        c.get(f"/tmp/{OURS}-bye.bin", into)
        assert into.getvalue() == data
        assert _get_through_a_fifo(c, f"/tmp/{OURS}-bye.bin", tmp_path / "fifo") == data
    finally:
        c.run(f"rm -f /tmp/{OURS}-bye.bin", hide=True)


def test_a_get_of_a_device_reads_it_to_its_end_as_stock_does(
    c: MuxConnection, tmp_path: Path
) -> None:
    for get, name in ((Transfer(c).get, "stock"), (c.get, "ours")):
        got = get("/dev/null", str(tmp_path / name))
        assert Path(got.local).read_bytes() == b""
    assert (tmp_path / "ours").stat().st_mode == (tmp_path / "stock").stat().st_mode
    into = io.BytesIO(b"")
    c.get("/dev/null", into)
    assert into.getvalue() == b""


def test_relative_paths_follow_the_sftp_sessions_folder_as_stock_does(
    c: MuxConnection, tmp_path: Path
) -> None:
    local = tmp_path / "file.txt"
    local.write_text("here\n")
    home = c.run("pwd -P", hide=True).stdout.strip()
    results = []
    for mover, folder in ((Transfer(c), STOCK), (c, OURS)):
        c.sftp().chdir(f"{home}/{folder}/sub")
        results.append(mover.put(str(local), "file.txt"))
        assert remote_state(c, f"{folder}/sub/file.txt")[1] == "here\n"
        mover.put(str(local), None)  # no path: the local name, in that folder too
        got = mover.get("file.txt", str(tmp_path / f"back-{folder}.txt"))
        assert Path(got.local).read_text() == "here\n"
    stock, ours = results
    same_result(ours, stock)
    assert ours.orig_remote == stock.orig_remote == "file.txt"
    c.sftp().chdir(None)  # back to where a session starts
    c.put(str(local), f"{OURS}/home.txt")
    assert remote_state(c, f"{OURS}/home.txt")[1] == "here\n"


def test_a_new_file_from_get_has_the_mode_open_gives_without_preserve_mode(
    c: MuxConnection, tmp_path: Path
) -> None:
    c.run(f"printf 'x\\n' > {OURS}/m.txt && chmod 600 {OURS}/m.txt", hide=True)
    before = os.umask(0o027)
    try:
        got = c.get(f"{OURS}/m.txt", str(tmp_path / "new.txt"), preserve_mode=False)
    finally:
        os.umask(before)
    assert stat.S_IMODE(os.stat(got.local).st_mode) == 0o640


@pytest.mark.parametrize("old", [True, False], ids=["replaced", "new"])
def test_a_get_onto_a_full_disk_says_so_and_leaves_the_old_file(
    c: MuxConnection, tmp_path: Path, old: bool
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small file system")  # CI runs as root
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)], check=True)
    try:
        local = small / "kept.txt"
        if old:
            local.write_bytes(b"old\n")
        c.run(f"head -c 300000 /dev/zero > {OURS}/big.bin", hide=True)
        with pytest.raises(OSError) as raised:
            c.get(f"{OURS}/big.bin", str(local))
        assert raised.value.errno == errno.ENOSPC
        assert "no space left on the local disk" in str(raised.value)
        said = "is as it was" if old else "was not made"
        assert str(raised.value.strerror).endswith(f"; {local} {said}")
        assert [p.name for p in small.iterdir()] == (["kept.txt"] if old else [])
        if old:
            assert local.read_bytes() == b"old\n"
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)
