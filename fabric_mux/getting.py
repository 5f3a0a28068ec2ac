"""Fabric's ``get`` in one session: into a file the master writes itself (where
:mod:`~fabric_mux.landing` says), or pumped through Python; what the login shell
printed told apart by :mod:`~fabric_mux.marked`'s markers (see
:mod:`fabric_mux.transfer`)."""

from __future__ import annotations

import errno
import functools
import os
import posixpath
import secrets
import stat
import string
from collections.abc import Callable
from typing import Any

from fabric.transfer import Result

from .descriptors import write_all
from .exceptions import TransferNeedsSftp
from .landing import Landing, landing_for
from .marked import Between, find, marker, move_to_start
from .progress import Progress, polling, progress_callback
from .session import SessionOpener
from .transfersession import Report, Transferring, check, command_line, run

__all__ = ["GET_FILE_SCRIPT", "GET_MARKED_SCRIPT", "get"]

#: $1 the remote path. Reports the absolute path and its ``ls -l`` line (mode,
#: size), then sends the bytes.
_GET_REPORT = r"""printf '\0fabric-mux-started' >&2
r=$1
case $r in /*) ;; *) cd -P . && r=$PWD/$r ;; esac
m=$(ls -ldnL -- "$r") || exit
printf '\0fabric-mux %s\0%s\0' "$r" "$m" >&2
"""
#: A get into a file: $2 a token, written between NULs to stdout after the file's
#: bytes (at once: a fork first would cost a round trip now and then), so that what
#: lands is [the file][marker], with whatever the login shell printed around it or
#: in it. Meanwhile, for a regular file (never a fifo: it would take its bytes), a
#: job of its own reports its POSIX cksum, which says whether bytes found before
#: the marker beyond the size are all at the head. Last, the ``ls -l`` line again:
#: a size that changed while cat read fails the get.
GET_FILE_SCRIPT = (
    _GET_REPORT
    + r"""{ [ -f "$r" ] && [ -r "$r" ] && s=$(cksum < "$r") &&
  printf '\0fabric-mux-sum %s\0' "$s"; } >&2 &
cat -- "$r" || exit
printf '\0%s\0' "$2"
printf '\0fabric-mux-after ' >&2
exec ls -ldnL -- "$r" >&2
"""
)
#: A get pumped through Python: $2 a token, written between NULs to stdout before
#: the file's bytes and after them: only what lies between is the file's (see
#: :class:`~fabric_mux.marked.Between`). A shell that echoes the command line it
#: runs echoes $2, but never between NULs: no command line holds a NUL.
GET_MARKED_SCRIPT = (
    _GET_REPORT
    + r"""printf '\0%s\0' "$2"
cat -- "$r" || exit
printf '\0%s\0' "$2"
"""
)


def get(
    opener: Transferring,
    remote: Any,
    local: Any = None,
    preserve_mode: bool = True,
    progress: Any = None,
) -> Result:
    """Fabric's ``Transfer.get``, in one session; see the module's notes."""
    if not remote:
        raise ValueError("Remote path must not be empty!")
    is_file_like = hasattr(local, "write") and callable(local.write)
    remote_name = posixpath.basename(remote)
    local_path = local
    if not is_file_like:
        local_path = _local_target(opener, remote, local)
    report_to = progress_callback(progress, remote_name or "download")
    if is_file_like:
        report = _pumped_into(opener, str(remote), local.write, report_to)
    else:
        with landing_for(local_path) as landing:
            if landing.readable:
                report = _into_file(opener, str(remote), landing, report_to)
            else:  # /dev/null, a fifo, or a file we may only write: as the bytes come
                sink = functools.partial(write_all, landing.fd)
                report = _pumped_into(opener, str(remote), sink, report_to)
            landing.finish(_mode_bits(report.mode) if preserve_mode and report.mode else None)
    return Result(
        orig_remote=remote,
        remote=report.path,
        orig_local=local,
        local=local_path,
        connection=opener,
    )


def _mismatch(got: int | None, size: int | None) -> OSError:
    """What stock raises for a get that did not bring the file's bytes."""
    return OSError(f"size mismatch in get!  {got} != {size}")


def _into_file(
    opener: SessionOpener, remote: str, landing: Landing, progress: Progress | None
) -> Report:
    """Run a get whose stdout is the landing file itself: the master writes the bytes
    into it, none pass through Python. Leaves it holding just the file's bytes."""
    token = secrets.token_hex(16)
    mark = marker(token)
    fd = landing.fd

    def position() -> int:  # what has landed, less the marker that comes last
        return max(0, os.lseek(fd, 0, os.SEEK_CUR) - len(mark))

    with polling(progress, None, position, final=False):
        report, _ = run(opener, command_line(GET_FILE_SCRIPT, remote, token), stdout=fd)
    landed = os.lseek(fd, 0, os.SEEK_CUR)  # the master wrote through our offset
    size = report.size
    # Nothing printed before the marker: it is right after the size's worth of bytes.
    end = find(fd, mark, size, landed) if size is not None else -1
    if not report.ok or end < 0:
        landing.check_room(landed)
    if not report.started:
        raise TransferNeedsSftp(report.errors)
    check(opener.original_host, report, remote)
    if size is None:
        raise OSError(errno.EIO, f"{opener.original_host}: {remote} has no size to check", remote)
    for read in (report.size_after, report.sum[1] if report.sum else None):
        # The file changed while cat read it, or reads as other than its size says.
        if read is not None and read != size:
            raise _mismatch(read, size)
    if end < 0:  # fewer bytes than the size
        end = find(fd, mark, 0, landed)
        raise _mismatch(end if end >= 0 else landed, size)
    if end > size and not _all_before(fd, end - size, size, report):
        raise _mismatch(end, size)
    os.ftruncate(fd, size)  # what came after the marker is not the file's
    if progress:
        progress(size, size)
    return report


def _all_before(fd: int, head: int, size: int, report: Report) -> bool:
    """Whether the ``head`` bytes too many all came before the file's (a login shell
    that greets): then they are taken off, and the rest checked by the remote's cksum.
    False if they may be anywhere else (a job the login shell left printing)."""
    if report.sum is None or not report.mode.startswith("-"):
        # A fifo's or a device's bytes cannot be summed again: the extra bytes could
        # be anywhere, and stock's size check fails such a get too.
        return False
    return move_to_start(fd, head, size) == report.sum[0]


def _pumped_into(
    opener: SessionOpener, remote: str, sink: Callable[[bytes], object], progress: Progress | None
) -> Report:
    """Run a get whose bytes pass through Python to ``sink``: a file-like object, or
    what has no offset to count by (``/dev/null``, a fifo, a terminal) or cannot be
    read back (a file we may only write). What the login shell prints before, after
    (never passed on) or among them (a size mismatch) is told apart by a marker
    printed on both sides of them."""
    token = secrets.token_hex(16)
    into = Between(marker(token), sink)
    # Progress counts what was passed on, not the markers or what came around them.
    passed = (lambda _pumped, total: progress(into.passed, total)) if progress else None
    command = command_line(GET_MARKED_SCRIPT, remote, token)
    report, _ = run(opener, command, sink=into.write, progress=passed)
    if progress:
        progress(into.passed, into.passed)
    if not report.started:
        raise TransferNeedsSftp(report.errors)
    check(opener.original_host, report, remote)
    if not into.ended or (report.size is not None and into.passed != report.size):
        raise _mismatch(into.passed, report.size)
    return report


def _local_target(opener: Transferring, remote: str, local: str | None) -> str:
    """Fabric's local path for a get: interpolated, a folder gets the remote's name."""
    remote_name = posixpath.basename(remote)
    pattern = local or remote_name
    # {dirname} is the absolute remote folder, as Fabric's: a relative path
    # is joined to the remote home (asked only when the pattern needs it).
    wants_dirname = any(field == "dirname" for _, field, _, _ in string.Formatter().parse(pattern))
    if wants_dirname and not remote.startswith("/"):
        remote = posixpath.join(opener.remote_home(), remote)
    target = pattern.format(
        host=opener.host,
        user=opener.user,
        port=opener.port,
        dirname=posixpath.dirname(remote),
        basename=remote_name,
    )
    if target.endswith(os.sep):
        folder, target = target, os.path.join(target, remote_name)
    else:
        folder = os.path.dirname(target)
    if folder:
        os.makedirs(folder, exist_ok=True)
    return os.path.abspath(target)


def _mode_bits(shown: str) -> int:
    """The mode bits of an ``ls -l`` mode string such as ``-rwsr-x--T``."""
    permissions = shown[1:10]
    bits = 0
    for index, char in enumerate(permissions):
        if char not in "-ST":  # S and T: the special bit without x
            bits |= 1 << (8 - index)
    for index, special in ((2, stat.S_ISUID), (5, stat.S_ISGID), (8, stat.S_ISVTX)):
        if permissions[index : index + 1] in ("s", "S", "t", "T"):
            bits |= special
    return bits
