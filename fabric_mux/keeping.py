"""What a new file keeps of the file it replaces: its owner, group and extended
attributes (its ACL among them), given before any byte lands."""

from __future__ import annotations

import errno
import os

__all__ = ["carried_over"]

# The kernel drops a file's capabilities whenever it is written to: new bytes
# never inherit what the old program was allowed.
_NOT_CARRIED = {"security.capability"}


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
        for name, value in _attributes(old_fd):
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
    if not hasattr(os, "listxattr"):
        return []  # not Linux: none are carried over
    try:
        names = os.listxattr(fd)
    except OSError as error:
        if error.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return []
        raise
    return [(name, os.getxattr(fd, name)) for name in names if name not in _NOT_CARRIED]


def _attribute(fd: int, name: str) -> bytes | None:
    try:
        return os.getxattr(fd, name)
    except OSError:
        return None
