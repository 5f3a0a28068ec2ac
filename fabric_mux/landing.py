"""Where a get's bytes land on this machine, and how they take the target's place.

The target's folder is opened once, by the kernel's own lookup of the path (as
stock's ``open()`` looks it up: ``fs.protected_symlinks`` applies on the way),
and all that follows is done relative to that open folder: a folder renamed, or
swapped for a link, while the get runs cannot send the file anywhere else.

The old file is opened as stock's ``open(target, "wb")`` opens it, less the
truncation, so that the kernel says yes or no as it does to stock (write
permission, ``fs.protected_regular``). A get into it then writes into a new
file in the same folder, made 0600 (nobody else can read it while it fills) and
given the old file's owner, group and extended attributes (its ACL among them),
then renamed over the target only once whole and checked: a failed get leaves
the old file as it was. On Linux that new file has no name (``O_TMPFILE``) until
it is whole, so a process killed in the middle of a get leaves nothing behind;
where the system or the file system has no such files, it is a named
``.NAME.XXXXXXXX.fabric-mux`` beside the target.

A new file cannot always keep all that the old one had. Then the get writes
into the old file itself, as stock Fabric does (truncated, then written; a
failed get leaves it short): when the folder is not writable, when the file
has other hard links (they would keep the old bytes), when its owner, its
group or one of its extended attributes cannot be given to a new file, or
when it is a mount point (a file bind-mounted over it, as a container's
``/etc/resolv.conf``), which cannot be renamed over. Errors name the target,
never a landing file.

A target that is a symbolic link is opened through the link by the kernel, as
stock opens it (the kernel decides whether the link may be followed), and
written in place; so is anything that is not a regular file (a fifo,
``/dev/null``), as its bytes come.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager

from .keeping import as_written, carried_over

__all__ = ["Landing", "landing_for"]

#: ``O_TMPFILE`` where the platform has it; 0 where not (then landing files are named).
UNNAMED = getattr(os, "O_TMPFILE", 0)

# A folder opened only to be looked in: no read permission needed, as for open().
_FOLDER = getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | os.O_CLOEXEC

# Stock's open(target, "wb"); and the same, to read back what landed.
_STOCK = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
_STOCK_READABLE = os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC

# What a file system or kernel without O_TMPFILE answers (EISDIR: a kernel that
# predates it sees only the O_DIRECTORY in it).
_NO_UNNAMED = {errno.EOPNOTSUPP, errno.ENOTSUP, errno.EISDIR, errno.EINVAL}

# A folder where no new file can be made: the old file is written in place.
_FOLDER_CLOSED = {errno.EACCES, errno.EPERM}

_CHUNK = 1024 * 1024


class Landing:
    """The descriptor a get writes to (:attr:`fd`), and what puts it in place;
    made by :func:`landing_for`."""

    def __init__(
        self,
        fd: int,
        target: str,
        *,
        folder: int = -1,
        name: str = "",
        landing_name: str | None = None,
        old: os.stat_result | None = None,
        in_place: bool = False,
        streams: bool = False,
        readable: bool = True,
    ) -> None:
        self.fd = fd
        #: The file the get is for, as the user named it.
        self.target = target
        #: False: the bytes go into the target itself.
        self.replaces = not in_place and not streams
        #: True: not a regular file (a fifo, a device): written as the bytes come.
        self.streams = streams
        #: Whether what landed can be read back (a file we may only write cannot).
        self.readable = readable and not streams
        self._folder = folder  # the target's folder, open; the caller's to close
        self._name = name  # the target's name in it
        self._landing_name = landing_name  # a named landing file, removed unless renamed
        self._old = old

    def check_room(self, landed: int) -> None:
        """Say so if a full local disk is why a get ended short: the master only
        stops writing, and the session ends with no word of why."""
        if os.fstatvfs(self.fd).f_bavail != 0:
            return
        if not self.replaces:
            left = "holds what landed"
        else:
            left = "is as it was" if self._old is not None else "was not made"
        raise OSError(
            errno.ENOSPC,
            f"no space left on the local disk for the get ({landed} bytes landed); "
            f"{self.target} {left}",
            self.target,
        )

    def finish(self, mode: int | None) -> None:
        """Give it ``mode`` (None: the old file's, or what open() gives a new one) and
        put it in place, whole."""
        if self.streams:
            return
        with _naming(self.target):  # never a landing file's name
            if not self.replaces:
                _change_mode(self.fd, mode)
                return
            if mode is not None:
                os.fchmod(self.fd, mode)
            elif self._old is not None:
                os.fchmod(self.fd, as_written(self._old))
            else:
                os.fchmod(self.fd, _new_file_mode(self._folder))
            try:
                self._put_in_place()
            except OSError as error:
                if error.errno != errno.EBUSY or self._old is None:
                    raise
                # A mount point with one file system on both sides (a file bind-mounted
                # over the target) is not to be renamed over: written, as stock writes it.
                self._write_over(mode)

    def _write_over(self, mode: int | None) -> None:
        """Copy what landed into the target itself, and chmod it as stock would."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(self._name, flags, 0o666, dir_fd=self._folder)
        try:
            _copy(self.fd, fd)
            _change_mode(fd, mode)
        finally:
            os.close(fd)

    def _put_in_place(self) -> None:
        if self._landing_name is None:
            if self._old is None and _linked(self.fd, self._folder, self._name):
                return  # a new file: its name is its place
            self._landing_name = _link_beside(self.fd, self._folder, self._name)
        os.replace(self._landing_name, self._name, src_dir_fd=self._folder, dst_dir_fd=self._folder)
        self._landing_name = None

    def close(self) -> None:
        """Let go of it; a landing file not put in place is gone with it."""
        if self._landing_name is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._landing_name, dir_fd=self._folder)
            self._landing_name = None
        os.close(self.fd)


def _change_mode(fd: int, mode: int | None) -> None:
    """What stock does to the file it wrote in place: a chmod with ``mode``, if given."""
    # Only a change needs the file to be ours.
    if mode is not None and mode != stat.S_IMODE(os.fstat(fd).st_mode):
        os.fchmod(fd, mode)


def _copy(source: int, into: int) -> None:
    """Make the file at ``into`` hold what the file at ``source`` holds."""
    os.ftruncate(into, 0)
    offset = 0
    while True:
        chunk = os.pread(source, _CHUNK, offset)
        if not chunk:
            return
        view = memoryview(chunk)
        while view:
            written = os.pwrite(into, view, offset)
            view = view[written:]
            offset += written


@contextmanager
def landing_for(path: str) -> Iterator[Landing]:
    """Where a get into ``path`` writes; what was not put in place is removed when
    the block ends. ``path`` is absolute; its folder is looked up once, here."""
    folder_path, name = os.path.split(path)
    if not name:
        raise OSError(errno.EISDIR, os.strerror(errno.EISDIR), path)
    with _naming(path):
        folder = os.open(folder_path, _FOLDER)
    try:
        with _naming(path):
            landing = _landing(folder, name, path)
        try:
            yield landing
        finally:
            landing.close()
    finally:
        os.close(folder)


def _landing(folder: int, name: str, target: str) -> Landing:
    """A new file that will keep what the old one had, else the old file itself."""
    try:
        shown = os.stat(name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return _new_landing(folder, name, target, None)
    if stat.S_ISLNK(shown.st_mode):
        return _through_link(folder, name, target)
    if not stat.S_ISREG(shown.st_mode):
        return _streamed(os.open(name, _STOCK, 0o666, dir_fd=folder), target)
    try:
        old_fd, readable = _open_old(folder, name)
    except OSError as error:
        if error.errno != errno.ELOOP:
            raise
        return _through_link(folder, name, target)  # it became a link meanwhile
    old = os.fstat(old_fd)
    if not stat.S_ISREG(old.st_mode):  # it became a fifo meanwhile: as stock opens it
        os.close(old_fd)
        return _streamed(os.open(name, _STOCK, 0o666, dir_fd=folder), target)
    if old.st_nlink > 1:
        return _in_place(old_fd, target, readable)  # its other names would keep the old bytes
    if old.st_dev != os.fstat(folder).st_dev:
        return _in_place(old_fd, target, readable)  # a mount point: not to be renamed over
    try:
        landing = _new_landing(folder, name, target, old)
    except OSError as error:
        if error.errno not in _FOLDER_CLOSED:
            os.close(old_fd)
            raise
        return _in_place(old_fd, target, readable)
    if not carried_over(landing.fd, old_fd, old):
        landing.close()
        return _in_place(old_fd, target, readable)
    os.close(old_fd)
    return landing


@contextmanager
def _naming(target: str) -> Iterator[None]:
    """Errors name the target as the user gave it."""
    try:
        yield
    except OSError as error:
        raise OSError(error.errno, error.strerror, target) from None


def _open_old(folder: int, name: str) -> tuple[int, bool]:
    """The old file opened as stock's ``open(target, "wb")`` opens it, but neither
    truncated nor followed if a link: read and write if we may, else write only."""
    flags = os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(name, os.O_RDWR | flags, 0o666, dir_fd=folder), True
    except PermissionError:
        return os.open(name, os.O_WRONLY | flags, 0o666, dir_fd=folder), False


def _new_landing(folder: int, name: str, target: str, old: os.stat_result | None) -> Landing:
    """A new file in ``folder`` for the get into ``name``, to take its place."""
    fd, landing_name = _new_file(folder, name)
    return Landing(fd, target, folder=folder, name=name, landing_name=landing_name, old=old)


def _through_link(folder: int, name: str, target: str) -> Landing:
    """The file a link names, opened through the link by the kernel as stock opens
    it (``fs.protected_symlinks`` decides whether it may be followed), written in
    place. Read and write where it is, or will be, a regular file we may read."""
    try:
        shown: os.stat_result | None = os.stat(name, dir_fd=folder)
    except OSError:
        shown = None  # a dangling link (open() makes what it names), or one not to follow
    fd = -1
    # Never a fifo: opened for reading too, it would not wait for a reader.
    if shown is None or stat.S_ISREG(shown.st_mode):
        with contextlib.suppress(PermissionError):
            fd = os.open(name, _STOCK_READABLE, 0o666, dir_fd=folder)
    readable = fd >= 0
    if fd < 0:
        fd = os.open(name, _STOCK, 0o666, dir_fd=folder)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        return _streamed(fd, target)
    return Landing(fd, target, in_place=True, readable=readable)


def _streamed(fd: int, target: str) -> Landing:
    return Landing(fd, target, streams=True)


def _in_place(fd: int, target: str, readable: bool) -> Landing:
    """The old file itself, truncated as stock's ``open(target, "wb")`` does."""
    os.ftruncate(fd, 0)
    return Landing(fd, target, in_place=True, readable=readable)


def _new_file(folder: int, name: str) -> tuple[int, str | None]:
    """A new 0600 file in ``folder``: its descriptor, and its name (None: it has none)."""
    # Linked in later through /proc/self/fd: without /proc it could not be.
    if UNNAMED and os.path.isdir("/proc/self/fd"):
        try:
            return os.open(".", UNNAMED | os.O_RDWR | os.O_CLOEXEC, 0o600, dir_fd=folder), None
        except OSError as error:
            if error.errno not in _NO_UNNAMED:
                raise
    while True:
        landing_name = _beside(name)
        try:
            flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            return os.open(landing_name, flags, 0o600, dir_fd=folder), landing_name
        except FileExistsError:
            continue


def _beside(name: str) -> str:
    """A name for a landing file beside ``name`` (within NAME_MAX)."""
    return f".{name[:200]}.{secrets.token_hex(4)}.fabric-mux"


def _linked(fd: int, folder: int, name: str) -> bool:
    """Give the unnamed file at ``fd`` the name ``name`` in ``folder``; False if that
    name is taken."""
    # linkat() with AT_SYMLINK_FOLLOW on /proc's link to it; os.link calls plain link(),
    # which does not follow, unless it is given a folder to start from.
    fds = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.link(str(fd), name, src_dir_fd=fds, dst_dir_fd=folder, follow_symlinks=True)
    except FileExistsError:
        return False
    finally:
        os.close(fds)
    return True


def _link_beside(fd: int, folder: int, name: str) -> str:
    """Give the unnamed file at ``fd`` a name of its own beside ``name``: that name."""
    while True:
        landing_name = _beside(name)
        if _linked(fd, folder, landing_name):
            return landing_name


def _new_file_mode(folder: int) -> int:
    """The mode open() gives a new file in ``folder``: 0666 less the umask, or what
    the folder's default ACL says (the landing file has that ACL already: this mode
    makes it the one open() gives). Asked of the kernel, with a file made to see."""
    if UNNAMED:
        try:
            fd = os.open(".", UNNAMED | os.O_RDWR | os.O_CLOEXEC, 0o666, dir_fd=folder)
        except OSError as error:
            if error.errno not in _NO_UNNAMED:
                raise
        else:
            try:
                return stat.S_IMODE(os.fstat(fd).st_mode)
            finally:
                os.close(fd)
    return _mode_of_a_new_file(folder)


def _mode_of_a_new_file(folder: int) -> int:
    """The mode of an empty file made in ``folder`` with 0666, removed at once."""
    name = f".fabric-mux-mode.{secrets.token_hex(4)}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(name, flags, 0o666, dir_fd=folder)
    try:
        return stat.S_IMODE(os.fstat(fd).st_mode)
    finally:
        os.close(fd)
        os.unlink(name, dir_fd=folder)
