"""The session a transfer runs in: one remote ``/bin/sh`` command, the report it
writes on stderr, the bytes pumped through Python where they must be (see
:mod:`fabric_mux.transfer`)."""

from __future__ import annotations

import errno
import os
import select
import shlex
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from typing import IO, Any, Protocol

from .descriptors import Descriptors
from .exceptions import TransferNeedsSftp
from .progress import Progress
from .session import SessionOpener

__all__ = [
    "HOME_SCRIPT",
    "FileLikeSource",
    "Report",
    "Transferring",
    "check",
    "command_line",
    "remote_home",
    "run",
]

_CHUNK = 65536
#: What a file-like object's copy keeps in memory before it goes to a private file.
_SPOOLED_IN_MEMORY = 8 << 20

# Written first, so that a session which never ran our command (an account
# restricted to SFTP) can be told apart from one that failed.
_STARTED = b"\0fabric-mux-started"
_DONE = b"\0fabric-mux "
_FOLDER = b"\0fabric-mux-folder"
_SUM = b"\0fabric-mux-sum "
_AFTER = b"\0fabric-mux-after "
_SHORT = b"\0fabric-mux-short "
_KEPT = b"\0fabric-mux-kept "

# Each script writes its report to stderr: after a NUL, "fabric-mux PATH", a
# NUL, then what ls or the last step says (exec'd: no fork for it). Success is
# that report and exit status 0.

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


def command_line(script: str, *args: str) -> str:
    """``/bin/sh -c SCRIPT sh ARGS...``, each part quoted once for the remote shell."""
    return " ".join(["/bin/sh", "-c", shlex.quote(script), "sh", *map(shlex.quote, args)])


class Report:
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
        # A put's own words, each between its tag and a NUL, taken out first.
        stderr, short = _taken(stderr, _SHORT)
        stderr, kept = _taken(stderr, _KEPT)
        #: A put's count of what came, where it was not the size sent.
        self.short = int(short) if short is not None and short.isdigit() else None
        #: Where a put's bytes are whole, when copying them into the file failed.
        self.kept = kept.decode("utf-8", "surrogateescape") if kept is not None else ""
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


def _taken(stderr: bytes, tag: bytes) -> tuple[bytes, bytes | None]:
    """``stderr`` without what follows ``tag`` up to a NUL; and that (None if absent)."""
    head, found, rest = stderr.partition(tag)
    if not found:
        return stderr, None
    said, _, rest = rest.partition(b"\0")
    return head + rest, said


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


def check(host: str, report: Report, path: str) -> None:
    if report.ok:
        return
    for text, code in _REMOTE_ERRORS:
        if text in report.errors:
            raise OSError(code, f"{host}: {report.errors}", path)
    why = report.errors or f"the transfer ended with exit {report.status} and no report"
    raise OSError(errno.EIO, f"{host}: transfer failed: {why}", path)


def remote_home(opener: SessionOpener) -> str:
    """The remote account's home, asked in one session."""
    report, _ = run(opener, command_line(HOME_SCRIPT))
    if not report.started:
        raise TransferNeedsSftp(report.errors)
    check(opener.original_host, report, ".")
    return report.path


class FileLikeSource:
    """Bytes from a file-like object (text is UTF-8, as paramiko's putfo writes it),
    from its start, and how many there are."""

    def __init__(self, stream: IO[Any], size: int) -> None:
        self._stream = stream
        self.size = size
        self._pending = b""
        self._done = False

    @classmethod
    def of(cls, stream: IO[Any], stack: ExitStack) -> FileLikeSource:
        """The source of ``stream``'s bytes. A binary stream is measured where it
        can be (seek to its end); text, whose UTF-8 length is known only once
        written, and what cannot be measured are copied first into a private file
        (held in memory up to a few MiB), closed with ``stack``."""
        stream.seek(0)
        if not isinstance(stream.read(0), str):
            try:
                size = stream.seek(0, os.SEEK_END)
                stream.seek(0)
            except (OSError, ValueError, TypeError):
                stream.seek(0)
            else:
                if isinstance(size, int):
                    return cls(stream, size)
        stream.seek(0)
        spool = stack.enter_context(tempfile.SpooledTemporaryFile(_SPOOLED_IN_MEMORY))
        copy = cls(stream, 0)
        while chunk := copy._read(_CHUNK):
            spool.write(chunk)
        size = spool.tell()
        spool.seek(0)
        return cls(spool, size)

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


def run(
    opener: SessionOpener,
    command: str,
    *,
    stdin: int | None = None,
    stdout: int | None = None,
    source: FileLikeSource | None = None,
    sink: Callable[[bytes], object] | None = None,
    progress: Progress | None = None,
) -> tuple[Report, int]:
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
    return Report(stderr, status), pumped


def _pump(
    fds: Descriptors,
    errors: int,
    feed: int | None,
    source: FileLikeSource | None,
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
