"""SFTP and file transfer through the master.

paramiko's ``SFTPClient`` speaks SFTP over one end of a socketpair whose other
end is the stdin and stdout of an ``sftp`` subsystem session. Whole files move
faster without Python in the path: the file's own descriptor is handed to the
master as the stdin of ``cat > REMOTE`` (upload) or the stdout of ``cat REMOTE``
(download), and SFTP is kept for what needs it (stat, paths, modes, file-like
objects).
"""

from __future__ import annotations

import errno
import os
import select
import shlex
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

from paramiko import SFTPAttributes, SFTPClient

from .exceptions import descriptor_errors
from .upstream import adjust_cwd

if TYPE_CHECKING:
    from .connection import MuxConnection
    from .session import Session

__all__ = ["MuxSFTPClient", "ProgressBar", "SessionSocket", "open_sftp", "progress_callback"]

Progress = Callable[[int, int], object]

#: How often a progress callback hears about a transfer that bypasses Python.
PROGRESS_INTERVAL = 0.2

# ssh's stderr wording -> the errno that paramiko would have raised.
_REMOTE_ERRORS = (
    ("No such file or directory", errno.ENOENT),
    ("Permission denied", errno.EACCES),
    ("Is a directory", errno.EISDIR),
    ("Not a directory", errno.ENOTDIR),
    ("No space left on device", errno.ENOSPC),
    ("Disk quota exceeded", errno.EDQUOT),
    ("Read-only file system", errno.EROFS),
)


class SessionSocket:
    """Our end of the socketpair, shaped as the channel paramiko's SFTP expects."""

    def __init__(self, sock: socket.socket, name: str, session: Session) -> None:
        self._sock = sock
        self._name = name
        self._session = session

    def send(self, data: bytes) -> int:
        return self._sock.send(data)

    def recv(self, size: int) -> bytes:
        return self._sock.recv(size)

    def recv_ready(self) -> bool:
        ready, _, _ = select.select([self._sock], [], [], 0)
        return bool(ready)

    def get_name(self) -> str:
        return self._name

    def settimeout(self, timeout: float | None) -> None:
        self._sock.settimeout(timeout)

    def gettimeout(self) -> float | None:
        return self._sock.gettimeout()

    def setblocking(self, blocking: bool) -> None:
        self._sock.setblocking(blocking)

    def close(self) -> None:
        self._sock.close()
        self._session.close()


class MuxSFTPClient(SFTPClient):  # type: ignore[misc]
    """paramiko's ``SFTPClient`` whose whole-file ``put``/``get`` skip Python.

    Everything else is paramiko's SFTP over a subsystem session.
    """

    connection: MuxConnection
    #: Progress callback used when ``put``/``get`` are given none (see
    #: ``MuxConnection.put(progress=...)``).
    default_callback: Progress | None = None

    def put(
        self,
        localpath: str | os.PathLike[str],
        remotepath: str | bytes,
        callback: Progress | None = None,
        confirm: bool = True,
    ) -> SFTPAttributes:
        """Upload a local file: its descriptor is the stdin of ``cat > REMOTE``."""
        path = self._remote_path(remotepath)
        with open(localpath, "rb") as local:
            size = os.fstat(local.fileno()).st_size
            report = callback or self.default_callback
            with _progress(report, size, lambda: os.lseek(local.fileno(), 0, os.SEEK_CUR)):
                self._cat(f"cat > {shlex.quote(path)}", local.fileno(), None, path)
        if not confirm:
            return SFTPAttributes()
        attributes: SFTPAttributes = self.stat(path)
        if attributes.st_size != size:
            raise OSError(f"size mismatch in put! {attributes.st_size} != {size}")
        return attributes

    def get(
        self,
        remotepath: str | bytes,
        localpath: str | os.PathLike[str],
        callback: Progress | None = None,
        prefetch: bool = True,
        max_concurrent_prefetch_requests: int | None = None,
    ) -> None:
        """Download to a local file: its descriptor is the stdout of ``cat REMOTE``."""
        path = self._remote_path(remotepath)
        size = self.stat(path).st_size  # a missing file raises here, before we write
        with open(localpath, "wb") as local:
            report = callback or self.default_callback
            with _progress(report, size or 0, lambda: os.fstat(local.fileno()).st_size):
                self._cat(f"cat {shlex.quote(path)}", None, local.fileno(), path)
            got = os.fstat(local.fileno()).st_size
        if size is not None and got != size:
            raise OSError(f"size mismatch in get! {got} != {size}")

    def _remote_path(self, path: str | bytes) -> str:
        return adjust_cwd(self, path)  # the path SFTP itself would use after chdir()

    def _cat(self, command: str, stdin: int | None, stdout: int | None, path: str) -> None:
        """Run ``command`` with the given descriptors; an exit other than 0 raises OSError."""
        with descriptor_errors("a transfer's session"):
            null = os.open(os.devnull, os.O_RDWR)
            try:
                errors_r, errors_w = os.pipe()
            except BaseException:
                os.close(null)
                raise
        try:
            fds = (null if stdin is None else stdin, null if stdout is None else stdout, errors_w)
            try:
                session = self.connection.open_session(command, fds)
            finally:
                os.close(errors_w)
                os.close(null)
            with session:
                # stderr ends when the session does; the exit message follows.
                with os.fdopen(errors_r, "rb", closefd=False) as errors:
                    stderr = errors.read().decode("utf-8", "replace").strip()
                status = session.wait_exit()
        finally:
            os.close(errors_r)
        if status != 0:
            raise _remote_error(self.connection.original_host, path, status, stderr)


def _remote_error(host: str, path: str, status: int | None, stderr: str) -> OSError:
    for text, code in _REMOTE_ERRORS:
        if text in stderr:
            return OSError(code, f"{host}: {stderr}", path)
    why = stderr or ("the session ended without an exit status" if status is None else "")
    return OSError(errno.EIO, f"{host}: transfer failed (exit {status}): {why}", path)


class _progress:
    """Report a transfer that Python does not see, by polling how far it got."""

    def __init__(self, callback: Progress | None, total: int, position: Callable[[], int]) -> None:
        self._callback = callback
        self._total = total
        self._position = position
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> None:
        if self._callback is not None:
            self._thread = threading.Thread(target=self._report, daemon=True)
            self._thread.start()

    def __exit__(self, *exc: Any) -> None:
        if self._thread is not None:
            self._done.set()
            self._thread.join()
            if exc[0] is None and self._callback is not None:
                self._callback(self._total, self._total)

    def _report(self) -> None:
        assert self._callback is not None
        while not self._done.wait(PROGRESS_INTERVAL):
            try:
                self._callback(min(self._position(), self._total), self._total)
            except OSError:
                return


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


def open_sftp(connection: MuxConnection) -> MuxSFTPClient:
    """An SFTP client on a new ``sftp`` subsystem session of ``connection``'s master."""
    with descriptor_errors("an SFTP session"):
        ours, theirs = socket.socketpair()
    try:
        with descriptor_errors("an SFTP session"):
            null = os.open(os.devnull, os.O_WRONLY)
        try:
            session = connection.open_session(
                "sftp", (theirs.fileno(), theirs.fileno(), null), subsystem=True
            )
        finally:
            os.close(null)
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    channel = SessionSocket(ours, f"sftp@{connection.original_host}", session)
    try:
        client = MuxSFTPClient(channel)
    except BaseException:
        channel.close()
        raise
    client.connection = connection
    return client
