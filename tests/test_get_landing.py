"""How a get takes the place of the local file it replaces: privately while it fills,
keeping the old file's owner, group, mode and extended attributes, in place where a new
file could not keep them, and nothing left behind by a process killed in the middle.

The servers run on this machine, so a remote file can be a fifo that the test feeds:
a get is then held in the middle of its transfer for as long as the test needs.
"""

from __future__ import annotations

import atexit
import contextlib
import grp
import json
import os
import pwd
import shutil
import stat
import struct
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import fabric
import pytest
from conftest import Flag
from fabric.transfer import Transfer
from waiting import wait_until

import fabric_mux
from fabric_mux import MuxConnection, landing
from fabric_mux.pytest_plugin import SshdFactory
from fabric_mux.testing import SshServer

#: The remote folder of this run (runs of the suite may share an account).
DIR = f"fmux-landing-{os.getpid()}"

OLD, NEW = b"the old bytes\n" * 100, b"the new bytes\n"

#: Another local account, for files and folders of a user's.
OTHER = "nobody"

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")  # CI runs as root


@pytest.fixture
def c(sshd: SshServer, config: fabric.Config) -> Iterator[MuxConnection]:
    connection = MuxConnection(sshd.alias, config=config)
    connection.run(f"rm -rf {DIR} && mkdir {DIR} && printf 'the new bytes\\n' > {DIR}/new.txt")
    connection.run(f"chmod 604 {DIR}/new.txt")
    yield connection
    connection.run(f"rm -rf {DIR}", hide=True)


@pytest.fixture
def shared() -> Iterator[Path]:
    """A folder every account can reach, for files the server's account shares with
    the test (fifos), and for local targets owned by others."""
    folder = Path(tempfile.mkdtemp(prefix="fml-", dir="/tmp"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        subprocess.run(["chattr", "-i", str(folder)], capture_output=True, check=False)
        shutil.rmtree(folder, ignore_errors=True)


def old_file(
    path: Path, mode: int = 0o644, owner: str | None = None, group: str | None = None
) -> int:
    """Make ``path`` the old file, holding :data:`OLD`; its inode."""
    path.write_bytes(OLD)
    os.chown(
        path,
        pwd.getpwnam(owner).pw_uid if owner else -1,
        grp.getgrnam(group).gr_gid if group else -1,
    )
    path.chmod(mode)  # after chown, which takes set-user-ID and set-group-ID away
    return path.stat().st_ino


# -- privately, and nothing left behind ---------------------------------------------------


class Feeder:
    """A remote file that is a fifo the test writes into: a get of it lasts until
    :meth:`end`, which removes it (the get then fails: the file is gone)."""

    def __init__(self, folder: Path, user: str) -> None:
        self.path = folder / "remote.fifo"
        os.mkfifo(self.path)
        account = pwd.getpwnam(user)
        os.chown(self.path, account.pw_uid, account.pw_gid)
        # Read and write: opening does not wait for the get's cat to open it.
        self._fd = os.open(self.path, os.O_RDWR)

    def feed(self, data: bytes) -> None:
        os.write(self._fd, data)

    def end(self, remove: bool = True) -> None:
        """Close it: cat reads to the end; then, with ``remove``, finds the file gone."""
        if self._fd >= 0:
            if remove:
                self.path.unlink()
            os.close(self._fd)
            self._fd = -1


@pytest.fixture
def feeder(shared: Path, sshd: SshServer) -> Iterator[Feeder]:
    fifo = Feeder(shared, sshd.user)
    try:
        yield fifo
    finally:
        fifo.end()


class GetInThread:
    """``c.get(remote, local)`` in a thread of its own, started at once: what it
    raised is in :attr:`failed` once :meth:`join` returns."""

    def __init__(self, c: MuxConnection, remote: Path, local: Path) -> None:
        self.failed: list[OSError] = []

        def get() -> None:
            try:
                c.get(str(remote), str(local))
            except OSError as error:
                self.failed.append(error)

        self._thread = threading.Thread(target=get)
        self._thread.start()

    def join(self) -> None:
        self._thread.join(timeout=60)

    def is_alive(self) -> bool:
        return self._thread.is_alive()


def landing_of(pid: int | str, folder: Path, target: Path) -> Path | None:
    """The file process ``pid`` has open in ``folder`` with bytes in it, other than
    ``target``: where its get lands (through /proc, which sees it named or not)."""
    fds = Path(f"/proc/{pid}/fd")
    for fd in fds.iterdir():
        try:
            name = os.readlink(fd)
            shown = fd.stat()
        except OSError:
            continue
        if (
            name.startswith(f"{folder}/")
            and stat.S_ISREG(shown.st_mode)
            and shown.st_ino != target.stat().st_ino
            and shown.st_size > 0
        ):
            return fd
    return None


@pytest.mark.parametrize("unnamed", [True, False], ids=["O_TMPFILE", "named"])
def test_a_get_lands_in_a_private_file_while_it_fills(
    c: MuxConnection,
    shared: Path,
    feeder: Feeder,
    monkeypatch: pytest.MonkeyPatch,
    unnamed: bool,
) -> None:
    if not unnamed:  # as on a system or file system without unnamed files
        monkeypatch.setattr(landing, "UNNAMED", 0)
    target = shared / "kept.txt"
    inode = old_file(target, 0o644)
    getting = GetInThread(c, feeder.path, target)
    try:
        feeder.feed(b"a secret\n" * 1000)
        assert wait_until(lambda: landing_of("self", shared, target) is not None, deadline=30)
        filling = landing_of("self", shared, target)
        assert filling is not None
        assert stat.S_IMODE(filling.stat().st_mode) == 0o600
        beside = sorted(p.name for p in shared.iterdir())
        if unnamed:
            assert beside == ["kept.txt", "remote.fifo"]  # it has no name yet
        else:
            assert len(beside) == 3 and beside[0].startswith(".kept.txt.")
            assert stat.S_IMODE((shared / beside[0]).stat().st_mode) == 0o600
    finally:
        feeder.end()
        getting.join()
    assert [type(error) for error in getting.failed] == [FileNotFoundError]
    assert target.read_bytes() == OLD and target.stat().st_ino == inode
    assert sorted(p.name for p in shared.iterdir()) == ["kept.txt"]


def test_a_file_that_changes_while_it_is_read_fails_the_get_as_stock_does(
    c: MuxConnection, shared: Path, feeder: Feeder
) -> None:
    target = shared / "kept.txt"
    inode = old_file(target)
    (shared / "grown.txt").write_bytes(b"grown")
    remote = shared / "remote.link"  # the fifo while the get starts, then a file of 5 bytes
    remote.symlink_to(feeder.path)
    getting = GetInThread(c, remote, target)
    try:
        feeder.feed(b"x" * 1000)
        # Bytes landed: cat has the fifo open, and reads on while the name changes.
        assert wait_until(lambda: landing_of("self", shared, target) is not None, deadline=30)
        (shared / "new.link").symlink_to(shared / "grown.txt")
        os.replace(shared / "new.link", remote)
    finally:
        feeder.end()
        getting.join()
    # ls said 0 bytes first, then 5: not taken for what the login shell printed.
    assert [str(error) for error in getting.failed] == ["size mismatch in get!  5 != 0"]
    assert target.read_bytes() == OLD and target.stat().st_ino == inode
    assert sorted(p.name for p in shared.iterdir()) == ["grown.txt", "kept.txt", "remote.link"]


def test_a_remote_fifo_fails_its_size_check_as_stock_does(
    c: MuxConnection, shared: Path, feeder: Feeder
) -> None:
    target = shared / "kept.txt"
    inode = old_file(target)
    getting = GetInThread(c, feeder.path, target)
    try:
        feeder.feed(b"from a fifo\n")
        assert wait_until(lambda: landing_of("self", shared, target) is not None, deadline=30)
    finally:
        feeder.end(remove=False)  # the fifo stays, with no writer: nothing to wait for
        getting.join()
    assert not getting.is_alive()
    # ls says 0 bytes; what came is not taken for what the login shell printed.
    assert [str(error) for error in getting.failed] == ["size mismatch in get!  12 != 0"]
    assert target.read_bytes() == OLD and target.stat().st_ino == inode
    assert sorted(p.name for p in shared.iterdir()) == ["kept.txt", "remote.fifo"]


KILLED_GET = textwrap.dedent(
    """
    import sys
    import fabric
    from fabric_mux import MuxConnection, landing
    ssh_config, control_dir, alias, remote, local = sys.argv[1:6]
    config = fabric.Config(runtime_ssh_path=ssh_config,
                           overrides={"mux": {"control_dir": control_dir}})
    MuxConnection(alias, config=config).get(remote, local)
    """
)


def test_a_get_killed_in_the_middle_leaves_the_old_file_whole_and_nothing_beside_it(
    c: MuxConnection, sshd: SshServer, control_dir: Path, shared: Path, feeder: Feeder
) -> None:
    c.run("true")  # the master is up: the child rides it
    target = shared / "kept.txt"
    inode = old_file(target, 0o640)
    where = [str(sshd.ssh_config), str(control_dir), sshd.alias]
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_GET, *where, str(feeder.path), str(target)]
    )
    try:
        feeder.feed(os.urandom(60_000))
        assert wait_until(lambda: landing_of(child.pid, shared, target) is not None, deadline=30)
    finally:
        child.kill()
        child.wait()
    assert sorted(p.name for p in shared.iterdir()) == ["kept.txt", "remote.fifo"]
    assert target.read_bytes() == OLD and target.stat().st_ino == inode
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


# -- where the target is ------------------------------------------------------------------


def as_account(name: str, *argv: str, cwd: Path) -> None:
    """Run ``argv`` as the account ``name`` (what that user would do meanwhile)."""
    account = pwd.getpwnam(name)
    subprocess.run(argv, user=account.pw_uid, group=account.pw_gid, cwd=cwd, check=True)


class Held:
    """A get whose remote command, once running (its landing made), waits for the
    test's word before it sends a byte: :meth:`start` it, do what is to happen
    meanwhile, then :meth:`end` it."""

    def __init__(self, c: MuxConnection, remote: Path, held: Path, flag: Flag) -> None:
        self.c = c
        #: The remote file: :data:`NEW`.
        self.remote = remote
        self._held = held
        self._flag = flag
        self._getting: GetInThread | None = None

    def start(self, local: Path) -> None:
        self._getting = GetInThread(self.c, self.remote, local)
        assert wait_until(self._held.exists, deadline=30)

    @property
    def failed(self) -> list[OSError]:
        """What the get raised."""
        return self._getting.failed if self._getting is not None else []

    def end(self) -> None:
        self._flag.raise_()
        if self._getting is not None:
            self._getting.join()


@pytest.fixture
def held(sshd_factory: SshdFactory, control_dir: Path, shared: Path, flag: Flag) -> Iterator[Held]:
    # The get's remote command says it runs, then waits for the flag.
    says = shared / "says"
    says.mkdir()
    hold = f"touch {says / 'held'}; {flag.waited_for()}"
    server = sshd_factory(
        sshd_options=[
            f'ForceCommand case "$SSH_ORIGINAL_COMMAND" in *fmux-held*) {hold} ;; esac; '
            'eval "$SSH_ORIGINAL_COMMAND"'
        ]
    )
    shutil.chown(says, server.user)
    c = MuxConnection(
        server.alias, config=server.fabric_config({"mux": {"control_dir": str(control_dir)}})
    )
    remote = shared / "fmux-held.bin"
    remote.write_bytes(NEW)
    remote.chmod(0o644)
    getting = Held(c, remote, says / "held", flag)
    try:
        yield getting
    finally:
        getting.end()


@needs_root
def test_a_folder_swapped_for_a_link_mid_get_cannot_send_the_file_elsewhere(
    held: Held, shared: Path
) -> None:
    roots = shared / "roots"  # a folder of root's, with a file of root's
    roots.mkdir()
    roots_file = roots / "victim"
    inode = old_file(roots_file, 0o600)
    home = shared / "home"  # a folder of the user's: the get's target is in it
    home.mkdir()
    (home / "sub").mkdir()
    for made in (home, home / "sub"):
        shutil.chown(made, OTHER, "nogroup")
    old_file(home / "sub" / "victim", 0o644, owner=OTHER)
    try:
        held.start(home / "sub" / "victim")  # the landing is made, the bytes wait
        as_account(OTHER, "sh", "-c", f"mv sub sub.old && ln -s {roots} sub", cwd=home)
    finally:
        held.end()
    assert held.failed == []
    assert roots_file.read_bytes() == OLD and roots_file.stat().st_ino == inode
    assert roots_file.stat().st_uid == 0 and sorted(p.name for p in roots.iterdir()) == ["victim"]
    # It landed in the folder it was meant for, wherever that folder now is.
    assert (home / "sub.old" / "victim").read_bytes() == NEW
    assert (home / "sub.old" / "victim").stat().st_uid == pwd.getpwnam(OTHER).pw_uid


@contextmanager
def kernel_setting(name: str, value: str) -> Iterator[bool]:
    """Set the sysctl ``name`` to ``value`` for the block, then back; whether it
    could be set (a container may not let even root)."""
    path = Path("/proc/sys", *name.split("."))
    before = path.read_text().strip()
    try:
        path.write_text(value)
    except OSError:
        yield False
        return
    try:
        yield True
    finally:
        path.write_text(before)


def outcome(get: Callable[..., Any], remote: str, local: Path) -> str:
    try:
        get(remote, str(local))
    except OSError as error:
        return type(error).__name__
    return "done"


@needs_root
def test_a_link_planted_in_a_sticky_folder_is_followed_only_as_the_kernel_lets_stock(
    c: MuxConnection, shared: Path
) -> None:
    sticky = shared / "tmp"  # as /tmp: everyone may make files, root owns it
    sticky.mkdir()
    sticky.chmod(0o1777)
    victim = shared / "shadow"
    inode = old_file(victim, 0o600)
    planted = sticky / "report.txt"
    planted.symlink_to(victim)
    os.lchown(planted, pwd.getpwnam(OTHER).pw_uid, -1)  # the user's link
    with kernel_setting("fs.protected_symlinks", "1") as protected:
        stock = outcome(Transfer(c).get, f"{DIR}/new.txt", planted)
        if stock == "done":
            old_file(victim, 0o600)
        ours = outcome(c.get, f"{DIR}/new.txt", planted)
    # Whatever the kernel lets stock's open() do, and nothing more: the link is
    # followed by the kernel, never by a path resolved beforehand.
    assert ours == stock
    if protected:
        assert ours == "PermissionError"
        assert victim.read_bytes() == OLD
    assert victim.stat().st_ino == inode and victim.stat().st_uid == 0
    assert planted.is_symlink()


@needs_root
def test_another_accounts_file_in_a_sticky_folder_is_refused_as_the_kernel_refuses_stock(
    c: MuxConnection, shared: Path
) -> None:
    sticky = shared / "tmp"
    sticky.mkdir()
    sticky.chmod(0o1777)
    planted = sticky / "report.txt"  # a file the user made where root's get will go
    inode = old_file(planted, 0o666, owner=OTHER)
    with kernel_setting("fs.protected_regular", "1") as protected:
        stock = outcome(Transfer(c).get, f"{DIR}/new.txt", planted)
        if stock == "done":  # not refused: the old bytes back, for ours
            old_file(planted, 0o666, owner=OTHER)
        ours = outcome(c.get, f"{DIR}/new.txt", planted)
    assert ours == stock
    if protected:
        assert ours == "PermissionError"
        assert planted.read_bytes() == OLD and planted.stat().st_ino == inode


# -- what the replaced file keeps ------------------------------------------------------------


@needs_root
@pytest.mark.parametrize("preserve_mode", [False, True])
def test_root_replacing_another_accounts_file_keeps_its_owner_group_and_mode(
    c: MuxConnection, shared: Path, preserve_mode: bool
) -> None:
    target = shared / "theirs.txt"
    inode = old_file(target, 0o640, owner="nobody", group="nogroup")
    c.get(f"{DIR}/new.txt", str(target), preserve_mode=preserve_mode)
    assert target.read_bytes() == NEW
    assert target.stat().st_ino != inode  # replaced whole, not written in place
    shown = target.stat()
    assert (pwd.getpwuid(shown.st_uid).pw_name, grp.getgrgid(shown.st_gid).gr_name) == (
        "nobody",
        "nogroup",
    )
    # With preserve_mode, the remote file's mode, as stock; else the old file's.
    assert stat.S_IMODE(shown.st_mode) == (0o604 if preserve_mode else 0o640)


def posix_acl(mode: int, user: int, user_perm: int) -> bytes:
    """``system.posix_acl_access`` as Linux stores it: ``mode``'s entries plus one for
    ``user``."""
    entries = [
        (0x01, (mode >> 6) & 7, 0xFFFFFFFF),  # ACL_USER_OBJ
        (0x02, user_perm, user),  # ACL_USER
        (0x04, (mode >> 3) & 7, 0xFFFFFFFF),  # ACL_GROUP_OBJ
        (0x10, (mode >> 3) & 7, 0xFFFFFFFF),  # ACL_MASK
        (0x20, mode & 7, 0xFFFFFFFF),  # ACL_OTHER
    ]
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *entry) for entry in entries)


def test_extended_attributes_and_the_acl_are_kept(c: MuxConnection, shared: Path) -> None:
    target = shared / "tagged.txt"
    inode = old_file(target, 0o640)
    os.setxattr(target, "user.origin", b"deploy 42")
    acl = posix_acl(0o640, pwd.getpwnam("nobody").pw_uid, 4)
    os.setxattr(target, "system.posix_acl_access", acl)
    c.get(f"{DIR}/new.txt", str(target), preserve_mode=False)
    assert target.read_bytes() == NEW and target.stat().st_ino != inode
    assert os.getxattr(target, "user.origin") == b"deploy 42"
    assert os.getxattr(target, "system.posix_acl_access") == acl
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


@needs_root
def test_roots_get_keeps_the_attributes_only_root_can_see(c: MuxConnection, shared: Path) -> None:
    target = shared / "tagged.txt"
    inode = old_file(target, 0o640)
    os.setxattr(target, "trusted.origin", b"deploy 42")  # hidden from all but CAP_SYS_ADMIN
    c.get(f"{DIR}/new.txt", str(target), preserve_mode=False)
    assert target.read_bytes() == NEW and target.stat().st_ino != inode
    assert os.getxattr(target, "trusted.origin") == b"deploy 42"


def default_acl(folder: Path) -> None:
    """Give ``folder`` a default ACL: new files get rw- for :data:`OTHER` and nothing
    for others, whatever the umask."""
    acl = posix_acl(0o750, pwd.getpwnam(OTHER).pw_uid, 6)
    os.setxattr(folder, "system.posix_acl_default", acl)


def acl_of(path: Path) -> bytes | None:
    try:
        return os.getxattr(path, "system.posix_acl_access")
    except OSError:
        return None


@pytest.mark.parametrize("preserve_mode", [False, True])
def test_a_new_file_under_a_default_acl_gets_what_stock_gets(
    c: MuxConnection, shared: Path, preserve_mode: bool
) -> None:
    default_acl(shared)
    for get, name in ((Transfer(c).get, "stock.txt"), (c.get, "ours.txt")):
        get(f"{DIR}/new.txt", str(shared / name), preserve_mode=preserve_mode)
    stock, ours = shared / "stock.txt", shared / "ours.txt"
    assert ours.read_bytes() == NEW
    # The ACL open() gives, and its mode (0640 here, 0604 with preserve_mode), not
    # the umask's 0644.
    assert stat.S_IMODE(ours.stat().st_mode) == stat.S_IMODE(stock.stat().st_mode)
    assert acl_of(ours) == acl_of(stock) is not None


@pytest.mark.parametrize("preserve_mode", [False, True])
def test_a_replaced_file_gets_no_acl_it_did_not_have(
    c: MuxConnection, shared: Path, preserve_mode: bool
) -> None:
    default_acl(shared)
    for name in ("stock.txt", "ours.txt"):
        old_file(shared / name, 0o640)
        os.removexattr(shared / name, "system.posix_acl_access")  # made before the ACL
    inode = (shared / "ours.txt").stat().st_ino
    Transfer(c).get(f"{DIR}/new.txt", str(shared / "stock.txt"), preserve_mode=preserve_mode)
    c.get(f"{DIR}/new.txt", str(shared / "ours.txt"), preserve_mode=preserve_mode)
    stock, ours = shared / "stock.txt", shared / "ours.txt"
    assert ours.read_bytes() == NEW and ours.stat().st_ino != inode  # replaced
    assert os.listxattr(ours) == os.listxattr(stock) == []
    assert stat.S_IMODE(ours.stat().st_mode) == stat.S_IMODE(stock.stat().st_mode)


# -- written in place ------------------------------------------------------------------


def test_a_file_with_other_hard_links_is_written_in_place(c: MuxConnection, shared: Path) -> None:
    target = shared / "linked.txt"
    inode = old_file(target, 0o640)
    os.link(target, shared / "other-name.txt")
    c.get(f"{DIR}/new.txt", str(target), preserve_mode=False)
    assert target.read_bytes() == (shared / "other-name.txt").read_bytes() == NEW
    assert target.stat().st_ino == inode
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(p.name for p in shared.iterdir()) == ["linked.txt", "other-name.txt"]


def test_a_failed_get_in_place_leaves_the_file_truncated_as_stock_does(
    c: MuxConnection, shared: Path
) -> None:
    target = shared / "linked.txt"
    inode = old_file(target)
    os.link(target, shared / "other-name.txt")
    # ls says 0 bytes, cat sends more: the get fails its size check after the bytes came.
    with pytest.raises(OSError, match="size mismatch in get"):
        c.get("/proc/version", str(target))
    assert OLD not in target.read_bytes() and target.stat().st_ino == inode
    assert sorted(p.name for p in shared.iterdir()) == ["linked.txt", "other-name.txt"]


@needs_root
def test_a_file_in_a_folder_that_takes_no_new_file_is_written_in_place(
    c: MuxConnection, shared: Path
) -> None:
    target = shared / "kept.txt"
    inode = old_file(target, 0o640)
    # Immutable: not even root makes a file in it; its files can still be written.
    subprocess.run(["chattr", "+i", str(shared)], check=True)
    c.get(f"{DIR}/new.txt", str(target))
    assert target.read_bytes() == NEW and target.stat().st_ino == inode
    assert stat.S_IMODE(target.stat().st_mode) == 0o604  # preserve_mode: chmod, as stock


@contextmanager
def mounted(*argv: str) -> Iterator[None]:
    """``mount ARGV...`` for the block; its target is unmounted however it ends."""
    subprocess.run(["mount", *argv], check=True)
    try:
        yield
    finally:
        subprocess.run(["umount", argv[-1]], check=False)


@needs_root
@pytest.mark.parametrize("across", [False, True], ids=["one file system", "another"])
def test_a_file_bind_mounted_over_the_target_is_written_in_place(
    c: MuxConnection, shared: Path, across: bool
) -> None:
    # As a container's /etc/resolv.conf, or a Kubernetes subPath: not to be renamed over.
    source_folder = shared / "source"
    source_folder.mkdir()
    with contextlib.ExitStack() as stack:
        if across:  # its own file system: the file and its folder differ in st_dev
            stack.enter_context(
                mounted("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(source_folder))
            )
        source, target = source_folder / "resolv.conf", shared / "resolv.conf"
        inode = old_file(source, 0o644)
        target.write_bytes(b"covered\n")
        stack.enter_context(mounted("--bind", str(source), str(target)))
        c.get(f"{DIR}/new.txt", str(target), preserve_mode=False)
        assert target.read_bytes() == source.read_bytes() == NEW
        assert target.stat().st_ino == inode
        assert stat.S_IMODE(target.stat().st_mode) == 0o644
        assert sorted(p.name for p in shared.iterdir()) == ["resolv.conf", "source"]


@needs_root
def test_an_error_names_the_target_never_a_landing_file(held: Held, shared: Path) -> None:
    folder = shared / "folder"
    folder.mkdir()
    target = folder / "kept.txt"
    inode = old_file(target)
    try:
        held.start(target)
        # Nothing can be named in it now: the finished file cannot take its place.
        subprocess.run(["chattr", "+i", str(folder)], check=True)
    finally:
        held.end()
        subprocess.run(["chattr", "-i", str(folder)], check=False)
    assert [(type(error), error.filename) for error in held.failed] == [
        (PermissionError, str(target))
    ]
    assert "fabric-mux" not in str(held.failed[0])
    assert target.read_bytes() == OLD and target.stat().st_ino == inode
    assert sorted(p.name for p in folder.iterdir()) == ["kept.txt"]


# -- as an account that is not root ----------------------------------------------------------

#: A get as another local account: with a master of its own (a master serves its own
#: uid only), logged in with a copy of the server's client key; stopped at the end.
GET_AS = textwrap.dedent(
    """
    import json, sys
    import fabric
    from fabric_mux import MuxConnection, landing
    ssh_config, control_dir, alias, remote, local = sys.argv[1:6]
    config = fabric.Config(runtime_ssh_path=ssh_config,
                           overrides={"mux": {"control_dir": control_dir}})
    c = MuxConnection(alias, config=config)
    try:
        c.get(remote, local, preserve_mode=False)
        print(json.dumps({"error": None}))
    except OSError as error:
        print(json.dumps({"error": type(error).__name__, "said": str(error)}))
    finally:
        c.mux_master.stop()
    """
)


@pytest.fixture
def get_as_other(
    sshd: SshServer, c: MuxConnection, shared: Path
) -> Iterator[Callable[..., dict[str, Any]]]:
    """``get(remote, local, groups=())``: a get run by :data:`OTHER` (with those extra
    groups), from the server ``c`` reaches; what it raised, if anything."""
    if os.geteuid() != 0:
        pytest.skip("only root can run a get as another account")
    account = pwd.getpwnam(OTHER)
    home = Path(tempfile.mkdtemp(prefix="fmo-", dir="/tmp"))
    try:
        key = home / "key"
        shutil.copyfile(sshd.client_key, key)
        key.chmod(0o600)
        known_hosts = home / "known_hosts"
        shutil.copyfile(sshd.known_hosts, known_hosts)
        ssh_config = home / "ssh_config"
        ssh_config.write_text(
            sshd.ssh_config.read_text()
            .replace(str(sshd.client_key), str(key))
            .replace(str(sshd.known_hosts), str(known_hosts))
        )
        for made in (home, key, known_hosts, ssh_config):
            os.chown(made, account.pw_uid, account.pw_gid)
        python, path = _python_for(account)
        where = [str(ssh_config), str(home / "c"), sshd.alias]

        def get(remote: str, local: Path, groups: tuple[int, ...] = ()) -> dict[str, Any]:
            ran = subprocess.run(
                [python, "-c", GET_AS, *where, remote, str(local)],
                user=account.pw_uid,
                group=account.pw_gid,
                extra_groups=list(groups),
                env={"HOME": str(home), "PATH": os.environ["PATH"], "PYTHONPATH": path},
                cwd=home,
                capture_output=True,
                text=True,
                check=False,
                timeout=120,
            )
            assert ran.returncode == 0, ran.stderr
            result: dict[str, Any] = json.loads(ran.stdout)
            return result

        yield get
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _python_for(account: pwd.struct_passwd) -> tuple[str, str]:
    """A Python that ``account`` can run and import fabric-mux with, and its
    ``PYTHONPATH``: this one, else the one it was made from with a copy of the
    packages fabric-mux loads (this one may live where the account cannot reach:
    a clone under /root, which is 0700)."""
    path = os.pathsep.join(
        [str(Path(fabric_mux.__file__).parents[1]), sysconfig.get_paths()["purelib"]]
    )
    if _imports_as(account, sys.executable, path):
        return sys.executable, path
    copied = _readable_packages()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"  # for compiled modules
    for python in (os.path.realpath(sys.executable), f"/usr/bin/python{version}"):
        if _imports_as(account, python, copied):
            return python, copied
    pytest.fail(f"no Python that {account.pw_name} can run imports fabric-mux")


def _imports_as(account: pwd.struct_passwd, python: str, path: str) -> bool:
    try:
        tried = subprocess.run(
            [python, "-c", "import fabric_mux, fabric"],
            user=account.pw_uid,
            group=account.pw_gid,
            env={"PYTHONPATH": path},
            cwd="/",
            capture_output=True,
            check=False,
        )
    except (PermissionError, FileNotFoundError):
        return False  # not a program the account may run (or none)
    return tried.returncode == 0


_COPIES: list[str] = []


def _readable_packages() -> str:
    """A folder everyone may read holding the packages (and fabric-mux) that
    ``import fabric_mux, fabric`` loads here: made once, removed at exit."""
    if _COPIES:
        return _COPIES[0]
    folder = Path(tempfile.mkdtemp(prefix="fmpkg-", dir="/tmp"))
    folder.chmod(0o755)
    atexit.register(shutil.rmtree, folder, True)
    _COPIES.append(str(folder))
    files = subprocess.run(
        [sys.executable, "-c", LOADED_FILES], capture_output=True, text=True, check=True
    ).stdout.split("\0")
    roots = {Path(fabric_mux.__file__).parent}
    for base in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}:
        for name in files:
            if name.startswith(base + os.sep):
                roots.add(Path(base) / Path(name).relative_to(base).parts[0])
        roots.update(Path(base).glob("*.dist-info"))  # what importlib.metadata reads
    for root in roots:
        if root.is_dir():
            shutil.copytree(root, folder / root.name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(root, folder / root.name)
    for path in folder.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return str(folder)


#: Prints, NUL-separated, every file that a get's imports load (every module of
#: fabric-mux, and what they import).
LOADED_FILES = textwrap.dedent(
    """
    import importlib, pkgutil, sys
    import fabric, fabric_mux
    for found in pkgutil.iter_modules(fabric_mux.__path__):
        if found.name not in ("pytest_plugin", "testing"):
            importlib.import_module("fabric_mux." + found.name)
    files = {getattr(module, "__file__", None) or "" for module in list(sys.modules.values())}
    print("\\0".join(sorted(files)))
    """
)


def test_a_file_in_a_folder_the_account_cannot_write_is_written_in_place(
    get_as_other: Callable[..., dict[str, Any]], shared: Path
) -> None:
    target = shared / "theirs.txt"  # the folder is root's, 0755
    inode = old_file(target, 0o640, owner=OTHER)
    assert get_as_other(f"{DIR}/new.txt", target) == {"error": None}
    assert target.read_bytes() == NEW and target.stat().st_ino == inode
    assert target.stat().st_uid == pwd.getpwnam(OTHER).pw_uid


def test_a_file_the_account_may_only_write_is_written_in_place(
    get_as_other: Callable[..., dict[str, Any]], shared: Path
) -> None:
    target = shared / "write-only.txt"
    inode = old_file(target, 0o200, owner=OTHER)
    assert get_as_other(f"{DIR}/new.txt", target) == {"error": None}
    target.chmod(0o600)
    assert target.read_bytes() == NEW and target.stat().st_ino == inode


def test_another_owner_that_cannot_be_kept_means_writing_in_place(
    get_as_other: Callable[..., dict[str, Any]], shared: Path
) -> None:
    folder = shared / "theirs"
    folder.mkdir()
    shutil.chown(folder, OTHER)  # the account may make files here
    target = folder / "roots.txt"
    inode = old_file(target, 0o666)  # root's, writable by all
    assert get_as_other(f"{DIR}/new.txt", target) == {"error": None}
    assert target.read_bytes() == NEW and target.stat().st_ino == inode
    assert target.stat().st_uid == 0
    assert sorted(p.name for p in folder.iterdir()) == ["roots.txt"]


def test_a_file_the_account_may_not_write_is_refused_as_stock_refuses_it(
    get_as_other: Callable[..., dict[str, Any]], shared: Path
) -> None:
    folder = shared / "theirs"
    folder.mkdir()
    shutil.chown(folder, OTHER)  # the account could make a new file here
    target = folder / "read-only.txt"
    inode = old_file(target, 0o444, owner=OTHER, group="nogroup")  # a new file could keep all
    assert get_as_other(f"{DIR}/new.txt", target)["error"] == "PermissionError"
    assert target.read_bytes() == OLD and target.stat().st_ino == inode


def test_a_group_of_the_accounts_own_is_kept_on_a_new_file(
    get_as_other: Callable[..., dict[str, Any]], shared: Path
) -> None:
    folder = shared / "theirs"
    folder.mkdir()
    shutil.chown(folder, OTHER)
    group = grp.getgrnam("users").gr_gid
    target = folder / "shared.txt"
    inode = old_file(target, 0o640, owner=OTHER, group="users")
    assert get_as_other(f"{DIR}/new.txt", target, groups=(group,)) == {"error": None}
    assert target.read_bytes() == NEW and target.stat().st_ino != inode
    shown = target.stat()
    assert (shown.st_uid, shown.st_gid) == (pwd.getpwnam(OTHER).pw_uid, group)
    assert stat.S_IMODE(shown.st_mode) == 0o640


@pytest.mark.parametrize("mode", [0o4755, 0o2755, 0o6755, 0o2745], ids=oct)
def test_set_ids_go_as_a_write_by_the_account_takes_them_from_stocks_file(
    get_as_other: Callable[..., dict[str, Any]], shared: Path, mode: int
) -> None:
    folder = shared / "theirs"
    folder.mkdir()
    shutil.chown(folder, OTHER)
    target, stocks = folder / "tool", folder / "stocks-tool"
    for made in (target, stocks):
        old_file(made, mode, owner=OTHER, group="nogroup")
        assert stat.S_IMODE(made.stat().st_mode) == mode
    inode = target.stat().st_ino
    # What the kernel leaves of the mode when the account writes the file, as
    # stock's open(local, "wb") does: set-user-ID goes; set-group-ID too, unless
    # the group may not run it and is the account's own (2745 stays).
    as_account(OTHER, "sh", "-c", f"printf new > {stocks}", cwd=folder)
    assert get_as_other(f"{DIR}/new.txt", target) == {"error": None}  # preserve_mode=False
    assert target.read_bytes() == NEW and target.stat().st_ino != inode  # replaced
    assert stat.S_IMODE(target.stat().st_mode) == stat.S_IMODE(stocks.stat().st_mode)


@needs_root
def test_roots_write_keeps_set_ids_as_the_kernel_does(c: MuxConnection, shared: Path) -> None:
    target = shared / "tool"
    old_file(target, 0o6755)
    c.get(f"{DIR}/new.txt", str(target), preserve_mode=False)
    assert stat.S_IMODE(target.stat().st_mode) == 0o6755  # CAP_FSETID: kept on a write


def test_a_users_get_cannot_keep_the_attributes_the_kernel_hides_from_it(
    get_as_other: Callable[..., dict[str, Any]], shared: Path
) -> None:
    # A documented limit: trusted.* attributes are invisible to the account (no
    # name listed, ENODATA as for none), so nothing tells it to write in place.
    folder = shared / "theirs"
    folder.mkdir()
    shutil.chown(folder, OTHER)
    target = folder / "tagged.txt"
    inode = old_file(target, 0o640, owner=OTHER, group="nogroup")
    os.setxattr(target, "trusted.origin", b"deploy 42")
    os.setxattr(target, "user.origin", b"deploy 42")
    assert get_as_other(f"{DIR}/new.txt", target) == {"error": None}
    assert target.read_bytes() == NEW and target.stat().st_ino != inode
    assert os.listxattr(target) == ["user.origin"]


def test_a_new_files_mode_is_known_without_setting_the_umask(tmp_path: Path) -> None:
    before = os.umask(0o027)
    folder = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        # From a file with no name, and as elsewhere, from one made and removed.
        assert landing._new_file_mode(folder) == 0o640
        assert landing._mode_of_a_new_file(folder) == 0o640
    finally:
        os.umask(before)
        os.close(folder)
    assert list(tmp_path.iterdir()) == []
