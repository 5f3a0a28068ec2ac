"""What a new file keeps of the file it replaces: its owner, group and extended
attributes (its ACL among them), exactly, given before any byte lands; and its
mode, as a write into the old file would have left it."""

from __future__ import annotations

import contextlib
import errno
import os
import stat

__all__ = ["as_written", "carried_over"]

# The kernel drops a file's capabilities whenever it is written to: new bytes
# never inherit what the old program was allowed.
_NOT_CARRIED = {"security.capability"}

# Its bit in /proc/self/status's CapEff (linux/capability.h).
_CAP_FSETID = 4


def carried_over(fd: int, old_fd: int, old: os.stat_result) -> bool:
    """Give the new file at ``fd`` the owner, group and extended attributes of the
    old file at ``old_fd``; False if any of them cannot be."""
    mine = os.fstat(fd)
    uid = old.st_uid if old.st_uid != mine.st_uid else -1
    gid = old.st_gid if old.st_gid != mine.st_gid else -1
    try:
        if uid != -1 or gid != -1:
            # Root can; a user can give a group of theirs. Before any mode: a chown
            # may clear the set-id bits.
            os.fchown(fd, uid, gid)
        wanted = dict(_attributes(old_fd))
        for name in _names(fd):
            # What the folder gave the new file (its default ACL) and the old one lacks.
            if name not in wanted:
                os.removexattr(fd, name)
        for name, value in wanted.items():
            if _attribute(fd, name) != value:
                os.setxattr(fd, name, value)
    except OSError:  # EPERM, EINVAL (an id that cannot be mapped), ENOTSUP...
        return False
    # An ACL copied over set the old file's permissions: private again while it fills.
    os.fchmod(fd, 0o600)
    return True


def _attributes(fd: int) -> list[tuple[str, bytes]]:
    """The extended attributes of the file at ``fd`` that a new file is to keep
    (ACLs are some)."""
    return [(name, os.getxattr(fd, name)) for name in _names(fd) if name not in _NOT_CARRIED]


def _names(fd: int) -> list[str]:
    """The names of the extended attributes of the file at ``fd`` that we may see."""
    if not hasattr(os, "listxattr"):
        return []  # not Linux: none are carried over
    try:
        return os.listxattr(fd)
    except OSError as error:
        if error.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return []
        raise


def _attribute(fd: int, name: str) -> bytes | None:
    try:
        return os.getxattr(fd, name)
    except OSError:
        return None


def as_written(old: os.stat_result) -> int:
    """The mode of ``old`` as a write into it by this process leaves it: as Linux
    does, without CAP_FSETID set-user-ID goes, and set-group-ID with it where the
    group may run it or is not one of ours (new bytes must not run with the
    rights that the old ones were given)."""
    mode = stat.S_IMODE(old.st_mode)
    if not mode & (stat.S_ISUID | stat.S_ISGID) or _keeps_set_ids():
        return mode
    mode &= ~stat.S_ISUID
    if mode & stat.S_IXGRP or old.st_gid not in {os.getegid(), *os.getgroups()}:
        mode &= ~stat.S_ISGID
    return mode


def _keeps_set_ids() -> bool:
    """Whether this process has CAP_FSETID (root has), which keeps them on a write."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"CapEff:"):
                    return bool(int(line.split()[1], 16) >> _CAP_FSETID & 1)
    return os.geteuid() == 0
