"""Where a get's bytes land on this machine, and how they take the target's place.

A get into a regular file writes into a new file in the target's folder,
made 0600 (nobody else can read it while it fills) and given the old file's
owner, group and extended attributes (its ACL among them), then renamed over
the target only once whole and checked: a failed get leaves the old file as
it was. On Linux that new file has no name (``O_TMPFILE``) until it is whole,
so a process killed in the middle of a get leaves nothing behind; where the
system or the file system has no such files, it is a named
``.NAME.XXXXXXXX.fabric-mux`` beside the target.

A new file cannot always keep all that the old one had. Then the get writes
into the old file itself, as stock Fabric does (truncated, then written; a
failed get leaves it short): when the folder is not writable, when the file
has other hard links (they would keep the old bytes), or when its owner, its
group or one of its extended attributes cannot be given to a new file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["Landing", "landing_for"]

#: ``O_TMPFILE`` where the platform has it; 0 where not (then landing files are named).
UNNAMED = getattr(os, "O_TMPFILE", 0)

# What a file system or kernel without O_TMPFILE answers (EISDIR: a kernel that
# predates it sees only the O_DIRECTORY in it).
_NO_UNNAMED = {errno.EOPNOTSUPP, errno.ENOTSUP, errno.EISDIR, errno.EINVAL}

# A folder where no new file can be made: the old file is written in place.
_FOLDER_CLOSED = {errno.EACCES, errno.EPERM}

# The kernel drops a file's capabilities whenever it is written to: new bytes
# never inherit what the old program was allowed.
_NOT_CARRIED = {"security.capability"}

_CHUNK = 1024 * 1024


class Landing:
    """The descriptor a get into a regular file writes to (:attr:`fd`), and what
    puts it in place; made by :func:`landing_for`."""

    def __init__(
        self,
        fd: int,
        target: str,
        *,
        name: str | None = None,
        old: os.stat_result | None = None,
        in_place: bool = False,
        readable: bool = True,
    ) -> None:
        self.fd = fd
        #: The file the get is for (links resolved).
        self.target = target
        #: False: the bytes go into the target itself.
        self.replaces = not in_place
        #: Whether what landed can be read back (a file we may only write cannot).
        self.readable = readable
        self._name = name  # a named landing file, removed unless renamed into place
        self._old = old

    def drop_head(self, head: int, size: int) -> None:
        """Move the ``size`` bytes found after ``head`` others to the start: what the
        login shell printed before the command ran (a copy, in this rare case only)."""
        moved = 0
        while moved < size:
            chunk = os.pread(self.fd, min(_CHUNK, size - moved), head + moved)
            if not chunk:
                break
            view = memoryview(chunk)
            while view:
                written = os.pwrite(self.fd, view, moved)
                view = view[written:]
                moved += written

    def truncate(self, size: int) -> None:
        os.ftruncate(self.fd, size)

    def check_room(self, landed: int) -> None:
        """Say so if a full local disk is why a get ended short: the master only
        stops writing, and the session ends with no word of why."""
        if os.fstatvfs(self.fd).f_bavail != 0:
            return
        left = "is as it was" if self.replaces else "holds what landed"
        raise OSError(
            errno.ENOSPC,
            f"no space left on the local disk for the get ({landed} bytes landed); "
            f"{self.target} {left}",
            self.target,
        )

    def finish(self, mode: int | None) -> None:
        """Give it ``mode`` (None: the old file's, or what open() gives a new one) and
        put it in place, whole."""
        if not self.replaces:
            # Stock chmods after writing; only a change needs the file to be ours.
            if mode is not None and mode != stat.S_IMODE(os.fstat(self.fd).st_mode):
                os.fchmod(self.fd, mode)
            return
        if mode is None:
            if self._old is not None:
                mode = stat.S_IMODE(self._old.st_mode)
            else:
                mode = _new_file_mode(os.path.dirname(self.target))
        os.fchmod(self.fd, mode)
        if self._name is None:
            if self._old is None and _linked(self.fd, self.target):
                return  # a new file: its name is its place
            self._name = _link_beside(self.fd, self.target)
        os.replace(self._name, self.target)
        self._name = None

    def close(self) -> None:
        """Let go of it; a landing file not put in place is gone with it."""
        if self._name is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._name)
            self._name = None
        os.close(self.fd)


@contextmanager
def landing_for(path: str) -> Iterator[Landing | None]:
    """Where a get into ``path`` writes, if it is (or will be) a regular file; else
    None, and the bytes go to ``path`` itself. A symbolic link is followed, as
    open() would; a landing not put in place is removed when the block ends."""
    target = os.path.realpath(path)
    try:
        old: os.stat_result | None = os.stat(target)
    except FileNotFoundError:
        old = None
    if old is not None and not stat.S_ISREG(old.st_mode):
        yield None
        return
    landing = _landing(target, old)
    try:
        yield landing
    finally:
        landing.close()


def _landing(target: str, old: os.stat_result | None) -> Landing:
    """A new file that will keep what the old one had, else the old file itself."""
    if old is not None and old.st_nlink > 1:
        return _in_place(target)  # its other names would keep the old bytes
    folder, name = os.path.split(target)
    try:
        fd, landing_name = _new_file(folder, name)
    except OSError as error:
        if old is None or error.errno not in _FOLDER_CLOSED:
            raise OSError(error.errno, error.strerror, target) from None
        return _in_place(target)
    landing = Landing(fd, target, name=landing_name, old=old)
    if old is not None and not _carried_over(fd, old, target):
        landing.close()
        return _in_place(target)
    return landing


def _new_file(folder: str, name: str) -> tuple[int, str | None]:
    """A new 0600 file in ``folder``: its descriptor, and its name (None: it has none)."""
    # Linked in later through /proc/self/fd: without /proc it could not be.
    if UNNAMED and os.path.isdir("/proc/self/fd"):
        try:
            return os.open(folder, UNNAMED | os.O_RDWR | os.O_CLOEXEC, 0o600), None
        except OSError as error:
            if error.errno not in _NO_UNNAMED:
                raise
    while True:
        path = os.path.join(folder, f".{name}.{secrets.token_hex(4)}.fabric-mux")
        try:
            flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
            return os.open(path, flags, 0o600), path
        except FileExistsError:
            continue


def _in_place(target: str) -> Landing:
    """The target itself, truncated as stock's ``open(target, "wb")`` does (no new inode)."""
    flags = os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        return Landing(os.open(target, os.O_RDWR | flags), target, in_place=True)
    except PermissionError:
        # Writable, not readable: what lands cannot be read back (the bytes are pumped).
        fd = os.open(target, os.O_WRONLY | flags)
        return Landing(fd, target, in_place=True, readable=False)


def _carried_over(fd: int, old: os.stat_result, path: str) -> bool:
    """Give the new file at ``fd`` the owner, group and extended attributes of the
    old file at ``path``; False if any of them cannot be."""
    mine = os.fstat(fd)
    uid = old.st_uid if old.st_uid != mine.st_uid else -1
    gid = old.st_gid if old.st_gid != mine.st_gid else -1
    try:
        if uid != -1 or gid != -1:
            # Root can; a user can give a group of theirs. Before any mode: a chown
            # may clear the set-id bits.
            os.fchown(fd, uid, gid)
        for name, value in _attributes(path):
            if _attribute(fd, name) != value:
                os.setxattr(fd, name, value)
    except OSError:  # EPERM, EINVAL (an id that cannot be mapped), ENOTSUP...
        return False
    # An ACL copied over set the old file's permissions: private again while it fills.
    os.fchmod(fd, 0o600)
    return True


def _attributes(path: str) -> list[tuple[str, bytes]]:
    """The extended attributes of ``path`` that a new file is to keep (ACLs are some)."""
    if not hasattr(os, "listxattr"):
        return []  # not Linux: none are carried over
    try:
        names = os.listxattr(path)
    except OSError as error:
        if error.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return []
        raise
    return [(name, os.getxattr(path, name)) for name in names if name not in _NOT_CARRIED]


def _attribute(fd: int, name: str) -> bytes | None:
    try:
        return os.getxattr(fd, name)
    except OSError:
        return None


def _linked(fd: int, path: str) -> bool:
    """Give the unnamed file at ``fd`` the name ``path``; False if that name is taken."""
    # linkat() with AT_SYMLINK_FOLLOW on /proc's link to it; os.link calls plain link(),
    # which does not follow, unless it is given a folder to start from.
    fds = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.link(str(fd), path, src_dir_fd=fds, follow_symlinks=True)
    except FileExistsError:
        return False
    finally:
        os.close(fds)
    return True


def _link_beside(fd: int, target: str) -> str:
    """Give the unnamed file at ``fd`` a name of its own beside ``target``: that name."""
    folder, name = os.path.split(target)
    while True:
        path = os.path.join(folder, f".{name}.{secrets.token_hex(4)}.fabric-mux")
        if _linked(fd, path):
            return path


def _new_file_mode(folder: str) -> int:
    """The mode open() gives a new file in ``folder``: 0666 less the umask, read
    without setting it (``os.umask`` would change it a moment for every thread)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    return _mode_of_a_new_file(folder)  # no /proc, or a kernel before 4.7


def _mode_of_a_new_file(folder: str) -> int:
    """The mode of an empty file made in ``folder`` with 0666, removed at once."""
    path = os.path.join(folder, f".fabric-mux-mode.{secrets.token_hex(4)}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        return stat.S_IMODE(os.fstat(fd).st_mode)
    finally:
        os.close(fd)
        os.unlink(path)
