"""``put`` and ``get`` in one session each, with Fabric's semantics.

One remote ``/bin/sh`` command does the whole transfer: it resolves the path
(relative to the remote home, a folder target gets the file's name), moves the
bytes, sets the mode, and reports on stderr, after a NUL, the size and the
absolute path that Fabric's ``Result`` and the size check need. So a transfer
costs one session and one session slot (a get about two round trips, a put
three: OpenSSH sends a session's stdin only once the command has started),
where SFTP cost a session, a stat, the data, a stat and a chmod.

No byte of a file ever travels in a command line or an environment variable:
the server shows every process's arguments to all of its users. A real local
file's own descriptor is the session's stdin (put) or stdout (get): its bytes
never pass through Python. File-like objects are pumped. A get into a file
lands where :mod:`~fabric_mux.landing` says: a new private file that takes
the old one's place once whole, or, where a new file could not keep what the
old one had, the old file itself.

What the account's login shell prints to the same stdout (before the command,
after it, or among the bytes from a job it left in the background) is told
apart, in the same session, by a random marker that the get's command prints
(see :mod:`~fabric_mux.marked`): a get never succeeds with bytes that are not
the file's. The size asked again after reading catches a file that changed.
Where the account has no shell to run the command (``ForceCommand
internal-sftp``), :class:`~fabric_mux.exceptions.TransferNeedsSftp` says so,
and the connection lets SFTP do it.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import posixpath
import secrets
import select
import shlex
import stat
import string
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import IO, Any, Protocol

from fabric.transfer import Result

from .descriptors import Descriptors, write_all
from .exceptions import TransferNeedsSftp
from .landing import Landing, landing_for
from .marked import Between, find, marker, move_to_start
from .session import SessionOpener

__all__ = ["ProgressBar", "get", "progress_callback", "put", "remote_home"]

log = logging.getLogger("fabric_mux")

Progress = Callable[[int, int], object]

#: How often a progress callback hears about a transfer that bypasses Python.
PROGRESS_INTERVAL = 0.2
_CHUNK = 65536

# Written first, so that a session which never ran our command (an account
# restricted to SFTP) can be told apart from one that failed.
_STARTED = b"\0fabric-mux-started"
_DONE = b"\0fabric-mux "
_FOLDER = b"\0fabric-mux-folder"
_SUM = b"\0fabric-mux-sum "
_AFTER = b"\0fabric-mux-after "

# Each script writes its report to stderr: after a NUL, "fabric-mux PATH", a
# NUL, then what ls or the last step says (exec'd: no fork for it). Success is
# that report and exit status 0.

#: $1 the remote path as given (may be empty), $2 the local name (joined to a
#: folder as posixpath.join joins, as Fabric does: an absolute name wins), $3 the mode or
#: empty. The bytes come on stdin, never in the command line: a remote process's
#: arguments are there for every user of the server to read (ps, /proc).
#: A new file is made 0600 (nobody else reads it while it fills), then given $3, or,
#: as SFTP gives a new file, 0666 less the umask (chmod's ``=rw`` with no "who" is
#: masked by it). Reports the absolute path, then wc's count of what landed.
PUT_SCRIPT = r"""printf '\0fabric-mux-started' >&2
r=$1
if [ -z "$r" ]; then r=$2
elif [ -d "$r" ]; then
  [ -n "$2" ] || { printf '\0fabric-mux-folder' >&2; exit 1; }
  case $2 in /*) r=$2 ;; *) r=${r%/}/$2 ;; esac
fi
case $r in /*) ;; *) cd -P . && r=$PWD/$r ;; esac
n=; [ -e "$r" ] || n=1
(umask 077 && exec cat > "$r") || exit
if [ -n "$3" ]; then chmod "$3" -- "$r" || exit
elif [ -n "$n" ]; then chmod =rw -- "$r" || exit
fi
printf '\0fabric-mux %s\0' "$r" >&2
exec wc -c < "$r" >&2"""

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

#: Reports the remote home (where a session starts) as a path.
HOME_SCRIPT = r"""printf '\0fabric-mux-started' >&2
cd -P . && printf '\0fabric-mux %s\0' "$PWD" >&2"""


class Transferring(SessionOpener, Protocol):
    """What a transfer needs of a connection: sessions, and what Fabric interpolates."""

    host: str
    user: str
    port: int

    def remote_home(self) -> str:
        """The remote home, for a relative path's ``{dirname}`` (cached by the caller)."""
        ...


# The remote's words -> the errno that paramiko would have raised.
_REMOTE_ERRORS = (
    ("No such file", errno.ENOENT),
    ("Directory nonexistent", errno.ENOENT),
    ("Permission denied", errno.EACCES),
    ("Is a directory", errno.EISDIR),
    ("Not a directory", errno.ENOTDIR),
    ("No space left on device", errno.ENOSPC),
    ("Disk quota exceeded", errno.EDQUOT),
    ("Read-only file system", errno.EROFS),
)


def _command(script: str, *args: str) -> str:
    """``/bin/sh -c SCRIPT sh ARGS...``, each part quoted once for the remote shell."""
    return " ".join(["/bin/sh", "-c", shlex.quote(script), "sh", *map(shlex.quote, args)])


class _Report:
    """What the remote command said on stderr, and how it ended."""

    def __init__(self, stderr: bytes, status: int | None) -> None:
        self.started = _STARTED in stderr
        self.into_folder = _FOLDER in stderr
        # A file get's cksum, from a job of its own: one write, which may come
        # anywhere, even between the words of another report; taken out first.
        stderr, tag, rest = stderr.partition(_SUM)
        summed, _, rest = rest.partition(b"\0")
        stderr += rest
        #: A get's POSIX cksum of the remote file, and its length, if reported.
        self.sum = _sum_shown(summed) if tag else None
        # Its last words: the size once read (ls's own words, if it failed, are errors).
        stderr, tag, again = stderr.partition(_AFTER)
        self.size_after = _size_shown(again) if tag else None
        if self.size_after is None:
            stderr += again
        before, done, after = stderr.replace(_STARTED, b"").partition(_DONE)
        path, _, rest = after.partition(b"\0")
        detail, _, later = rest.partition(b"\0")
        said = before.replace(_FOLDER, b"") + later
        self.errors = said.decode("utf-8", "replace").strip()
        self.ok = bool(done) and status == 0
        self.status = status
        #: The remote file's absolute path.
        self.path = path.decode("utf-8", "surrogateescape")
        #: Its size and, for a get, its mode as ``ls -l`` shows it.
        self.size: int | None = None
        self.mode = ""
        words = detail.split()
        if len(words) == 1 and words[0].isdigit():  # put: wc's count
            self.size = int(words[0])
        elif _size_shown(detail) is not None:  # get: ls -l
            self.mode = words[0][:10].decode("ascii", "replace")
            self.size = _size_shown(detail)


def _size_shown(line: bytes) -> int | None:
    """The size in an ``ls -l`` line."""
    words = line.split()
    if len(words) < 5:
        return None
    if words[0][:1] in (b"c", b"b"):
        # A device: ls shows its numbers where the size goes. stat() says 0, and
        # SFTP reads it to its end, as this get does (/dev/null: no bytes).
        return 0
    return int(words[4]) if words[4].isdigit() else None


def _sum_shown(line: bytes) -> tuple[int, int] | None:
    """The CRC and length in what ``cksum`` says of its stdin."""
    words = line.split()
    if len(words) == 2 and all(word.isdigit() for word in words):
        return int(words[0]), int(words[1])
    return None


def put(
    opener: Transferring,
    local: Any,
    remote: Any = None,
    preserve_mode: bool = True,
    progress: Any = None,
) -> Result:
    """Fabric's ``Transfer.put``, in one session; see the module's notes."""
    if not local:
        raise ValueError("Local path must not be empty!")
    is_file_like = hasattr(local, "write") and callable(local.write)
    if is_file_like:
        local_base = getattr(local, "name", None) or ""
        if not isinstance(local_base, str):
            local_base = ""
        if not remote:
            raise ValueError("Must give non-empty remote path when local is a file-like object!")
        local_path = local
    else:
        local_base = os.path.basename(local)
        local_path = os.path.abspath(local)
    mode = ""
    if preserve_mode and not is_file_like:
        mode = f"{stat.S_IMODE(os.stat(local_path).st_mode):o}"
    report_to = progress_callback(progress, local_base or "upload")

    command = _command(PUT_SCRIPT, str(remote or ""), local_base, mode)
    with ExitStack() as stack:
        if is_file_like:
            pointer = local.tell()
            stack.callback(local.seek, pointer)
            local.seek(0)
            report, sent = _run(opener, command, source=_FileLikeSource(local), progress=report_to)
            if report_to:
                report_to(sent, sent)
        else:
            where = stack.enter_context(open(local_path, "rb")).fileno()
            sent = os.fstat(where).st_size
            with _polling(report_to, sent, lambda: os.lseek(where, 0, os.SEEK_CUR)):
                report, _ = _run(opener, command, stdin=where)
    if not report.started:
        raise TransferNeedsSftp(report.errors)
    if report.into_folder:
        raise ValueError(
            "Can't put a file-like-object into a directory unless it has a non-empty "
            ".name attribute!"
        )
    _check(opener.original_host, report, str(remote or local_base))
    if report.size != sent:
        raise OSError(f"size mismatch in put!  {report.size} != {sent}")
    return Result(
        orig_remote=remote,
        remote=report.path,
        orig_local=local,
        local=local_path,
        connection=opener,
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
) -> _Report:
    """Run a get whose stdout is the landing file itself: the master writes the bytes
    into it, none pass through Python. Leaves it holding just the file's bytes."""
    token = secrets.token_hex(16)
    mark = marker(token)
    fd = landing.fd

    def position() -> int:  # what has landed, less the marker that comes last
        return max(0, os.lseek(fd, 0, os.SEEK_CUR) - len(mark))

    with _polling(progress, None, position, final=False):
        report, _ = _run(opener, _command(GET_FILE_SCRIPT, remote, token), stdout=fd)
    landed = os.lseek(fd, 0, os.SEEK_CUR)  # the master wrote through our offset
    size = report.size
    # Nothing printed before the marker: it is right after the size's worth of bytes.
    end = find(fd, mark, size, landed) if size is not None else -1
    if not report.ok or end < 0:
        landing.check_room(landed)
    if not report.started:
        raise TransferNeedsSftp(report.errors)
    _check(opener.original_host, report, remote)
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


def _all_before(fd: int, head: int, size: int, report: _Report) -> bool:
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
) -> _Report:
    """Run a get whose bytes pass through Python to ``sink``: a file-like object, or
    what has no offset to count by (``/dev/null``, a fifo, a terminal) or cannot be
    read back (a file we may only write). What the login shell prints before, after
    (never passed on) or among them (a size mismatch) is told apart by a marker
    printed on both sides of them."""
    token = secrets.token_hex(16)
    into = Between(marker(token), sink)
    # Progress counts what was passed on, not the markers or what came around them.
    passed = (lambda _pumped, total: progress(into.passed, total)) if progress else None
    command = _command(GET_MARKED_SCRIPT, remote, token)
    report, _ = _run(opener, command, sink=into.write, progress=passed)
    if progress:
        progress(into.passed, into.passed)
    if not report.started:
        raise TransferNeedsSftp(report.errors)
    _check(opener.original_host, report, remote)
    if not into.ended or (report.size is not None and into.passed != report.size):
        raise _mismatch(into.passed, report.size)
    return report


def remote_home(opener: SessionOpener) -> str:
    """The remote account's home, asked in one session."""
    report, _ = _run(opener, _command(HOME_SCRIPT))
    if not report.started:
        raise TransferNeedsSftp(report.errors)
    _check(opener.original_host, report, ".")
    return report.path


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


def _check(host: str, report: _Report, path: str) -> None:
    if report.ok:
        return
    for text, code in _REMOTE_ERRORS:
        if text in report.errors:
            raise OSError(code, f"{host}: {report.errors}", path)
    why = report.errors or f"the transfer ended with exit {report.status} and no report"
    raise OSError(errno.EIO, f"{host}: transfer failed: {why}", path)


# -- running the session ----------------------------------------------------------------


class _FileLikeSource:
    """Bytes from a file-like object (text is UTF-8, as paramiko's putfo writes it)."""

    def __init__(self, stream: IO[Any]) -> None:
        self._stream = stream
        self._pending = b""
        self._done = False

    def _read(self, size: int) -> bytes:
        chunk = self._stream.read(size)
        if not chunk:
            self._done = True
            return b""
        return chunk.encode("utf-8") if isinstance(chunk, str) else bytes(chunk)

    def take(self) -> bytes:
        if not self._pending and not self._done:
            self._pending = self._read(_CHUNK)
        return self._pending

    def sent(self, count: int) -> None:
        self._pending = self._pending[count:]


def _run(
    opener: SessionOpener,
    command: str,
    *,
    stdin: int | None = None,
    stdout: int | None = None,
    source: _FileLikeSource | None = None,
    sink: Callable[[bytes], object] | None = None,
    progress: Progress | None = None,
) -> tuple[_Report, int]:
    """Run ``command`` in one session; its report, and the bytes pumped through Python.

    ``stdin``/``stdout`` are descriptors handed to the master as they are;
    ``source``/``sink`` are pumped here, through pipes.
    """
    with Descriptors("a transfer's pipes") as fds:
        null = fds.open(os.devnull, os.O_RDWR)
        errors_r, errors_w = fds.pipe()
        feed = fds.pipe() if source is not None else None
        drain = fds.pipe() if sink is not None else None
        stdio = (
            feed[0] if feed else (stdin if stdin is not None else null),
            drain[1] if drain else (stdout if stdout is not None else null),
            errors_w,
        )
        session = opener.open_session(command, stdio)
        with session:
            # Theirs now: the master holds its own copies.
            fds.close(null, errors_w, feed[0] if feed else None, drain[1] if drain else None)
            stderr, pumped = _pump(
                fds,
                errors_r,
                feed[1] if feed else None,
                source,
                drain[0] if drain else None,
                sink,
                progress,
            )
            status = session.wait_exit()
    return _Report(stderr, status), pumped


def _pump(
    fds: Descriptors,
    errors: int,
    feed: int | None,
    source: _FileLikeSource | None,
    drain: int | None,
    sink: Callable[[bytes], object] | None,
    progress: Progress | None,
) -> tuple[bytes, int]:
    """Move bytes until the remote closes stderr (and stdout); stderr, and bytes pumped."""
    said: list[bytes] = []
    pumped = 0
    reading = {errors, *([drain] if drain is not None else [])}
    writing = feed
    poller = select.poll()
    for fd in reading:
        poller.register(fd, select.POLLIN)
    if writing is not None:
        poller.register(writing, select.POLLOUT)
    while reading:
        for fd, _ in poller.poll():
            if fd == writing and source is not None:
                data = source.take()
                if not data:
                    poller.unregister(fd)
                    fds.close(fd)  # the remote's EOF
                    writing = None
                    continue
                try:
                    written = os.write(fd, data)
                except BrokenPipeError:
                    poller.unregister(fd)
                    writing = None  # it stopped reading: the report says why
                    continue
                source.sent(written)
                pumped += written
                if progress:
                    progress(pumped, 0)
                continue
            chunk = os.read(fd, _CHUNK)
            if not chunk:
                poller.unregister(fd)
                reading.discard(fd)
            elif fd == errors:
                said.append(chunk)
            elif sink is not None:
                sink(chunk)
                pumped += len(chunk)
                if progress:
                    progress(pumped, 0)
    return b"".join(said), pumped


# -- progress -----------------------------------------------------------------------------


@contextmanager
def _polling(
    callback: Progress | None,
    total: int | None,
    position: Callable[[], int],
    final: bool = True,
) -> Iterator[None]:
    """Report a transfer that Python does not see, by polling how far it got; with
    ``final``, once more when it ends (else the caller says when it is whole)."""
    if callback is None:
        yield
        return
    done = threading.Event()

    def report() -> None:
        while not done.wait(PROGRESS_INTERVAL):
            try:
                callback(position(), total or 0)
            except OSError:
                return

    thread = threading.Thread(target=report, name="fabric-mux progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
    if final:
        at = position()
        callback(at, total if total is not None else at)


class ProgressBar:
    """A one-line progress report on a terminal: ``name  45%  12.0/100.0 MB  210 MB/s``."""

    def __init__(self, name: str, stream: IO[str] | None = None) -> None:
        self._name = name
        self._stream = stream or sys.stderr
        self._start = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        elapsed = max(time.monotonic() - self._start, 1e-6)
        percent = 100 * done // total if total else 100
        mb = 1024 * 1024
        line = (
            f"\r{self._name}  {percent:3d}%  {done / mb:.1f}/{total / mb:.1f} MB  "
            f"{done / mb / elapsed:.0f} MB/s"
        )
        self._stream.write(line + ("\n" if done >= total else ""))
        self._stream.flush()


def progress_callback(progress: object, name: str) -> Progress | None:
    """``progress=`` as a callback: a callable as is, True for a bar on a terminal."""
    if callable(progress):
        return progress
    if progress is True and sys.stderr.isatty():
        return ProgressBar(name)
    return None
