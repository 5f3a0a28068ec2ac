"""The invoke runner whose "process" is one mux-protocol session.

invoke's ``Runner`` brings watchers, hide/echo, encoding and ``Result``; this
subclass supplies the session and replaces invoke's sleep-polling loops with
waits that wake on events (the exit message, end of output, a timeout).
"""

from __future__ import annotations

import codecs
import errno
import fcntl
import logging
import os
import re
import select
import shlex
import signal
import stat
import struct
import termios
import threading
import tty
from collections.abc import Callable, Generator
from typing import IO, TYPE_CHECKING, Any

from fabric.runners import Remote
from invoke.terminals import character_buffered, pty_size

from .exceptions import MasterLost

log = logging.getLogger("fabric_mux")

if TYPE_CHECKING:
    from .connection import MuxConnection
    from .protocol import MuxClient

__all__ = ["MuxRemote", "remote_command"]

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def remote_command(command: str, env: dict[str, Any]) -> str:
    """``command`` with ``env`` exported first, each value quoted once for the remote shell."""
    if not env:
        return command
    for name in env:
        if not _ENV_NAME.match(name):
            raise ValueError(f"not a shell variable name: {name!r}")
    exports = " ".join(f"{name}={shlex.quote(str(value))}" for name, value in sorted(env.items()))
    return f"export {exports} && {command}"


class _Doorbell:
    """A pipe that a poll can wait on; ringing it is sticky."""

    def __init__(self) -> None:
        self.read_fd, self._write_fd = os.pipe()
        self.rung = threading.Event()
        self._lock = threading.Lock()
        self._closed = False

    def ring(self) -> None:
        # Under the lock: after close() the fd numbers may belong to others.
        with self._lock:
            if self.rung.is_set() or self._closed:
                self.rung.set()
                return
            self.rung.set()
            os.write(self._write_fd, b"!")

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            os.close(self.read_fd)
            os.close(self._write_fd)


def _readable(fds: list[int]) -> set[int]:
    """Block until some of ``fds`` can be read (or are at their end); those fds.

    poll, not select: descriptor numbers above 1023 are fine.
    """
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    return {fd for fd, _ in poller.poll()}


class _FinishedEvent(threading.Event):
    """invoke's ``program_finished`` that also rings a doorbell for the stdin thread."""

    def __init__(self, bell: _Doorbell) -> None:
        super().__init__()
        self._bell = bell

    def set(self) -> None:
        super().set()
        self._bell.ring()


def _streaming_fileno(stream: Any) -> int | None:
    """The descriptor to wait on for a terminal, pipe or socket; None otherwise.

    Regular files and file-like objects are read through their own ``read``,
    which also returns what the object has already buffered.
    """
    try:
        fd = stream.fileno()
        mode = os.fstat(fd).st_mode
    except (AttributeError, OSError, ValueError):
        return None
    if os.isatty(fd) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        return int(fd)
    return None


class MuxRemote(Remote):  # type: ignore[misc]
    """Runs a command as one session on the connection's master.

    Without a pty the session gets three pipes; with one, the slave end of a
    local pty is passed for all three with the want-tty flag, and the master
    allocates the remote pty from its size and modes.
    """

    read_chunk_size = 65536
    context: MuxConnection

    def __init__(self, context: MuxConnection, inline_env: bool | None = None) -> None:
        super().__init__(context, inline_env=inline_env)
        self._client: MuxClient | None = None
        self._stdin_fd: int | None = None
        self._stdout_fd: int | None = None
        self._stderr_fd: int | None = None
        self._exit_status: int | None = None
        #: Rung by a timeout and by a dying I/O thread: every wait stops.
        self._abort = _Doorbell()
        #: Rung when the program has finished: the stdin thread stops.
        self._finished = _Doorbell()
        self.program_finished = _FinishedEvent(self._finished)
        self._old_winch: Any = None
        self._killed = False
        self._stopped = False

    # -- start -------------------------------------------------------------

    def start(
        self, command: str | None, shell: str, env: dict[str, Any], timeout: Any = None
    ) -> None:
        text = self._command_line(command, env)
        flags: dict[str, Any] = {
            "env": [] if self.inline_env else [f"{k}={v}" for k, v in sorted(env.items())],
            "agent": bool(self.context.forward_agent),
        }
        if self._disowned:
            self._start_disowned(text, flags)
            return
        if self.using_pty:
            pty_fd, slave_fd = os.openpty()
            cols, rows = pty_size()
            fcntl.ioctl(slave_fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
            self._stdin_fd = self._stdout_fd = pty_fd
            try:
                self._client = self.context.open_session(
                    text, (slave_fd,) * 3, tty=True, term=os.environ.get("TERM", "vt100"), **flags
                )
                # The master read the pty's modes when it took the descriptor;
                # from here on our local pty must pass bytes through untouched.
                tty.setraw(slave_fd)
            finally:
                os.close(slave_fd)
            self._watch_window_size()
            return
        stdin_r, stdin_w = os.pipe()
        stdout_r, stdout_w = os.pipe()
        stderr_r, stderr_w = os.pipe()
        self._stdin_fd, self._stdout_fd, self._stderr_fd = stdin_w, stdout_r, stderr_r
        try:
            self._client = self.context.open_session(text, (stdin_r, stdout_w, stderr_w), **flags)
        finally:
            for fd in (stdin_r, stdout_w, stderr_w):
                os.close(fd)

    def _start_disowned(self, text: str, flags: dict[str, Any]) -> None:
        # invoke returns at once and never calls stop(): nothing here may need
        # us later. The command gets no stdio from us; its session lasts until
        # the connection closes (or this process ends), as with stock Fabric.
        null = os.open(os.devnull, os.O_RDWR)
        try:
            client = self.context.open_session(text, (null, null, null), **flags)
        finally:
            os.close(null)
        self.context.disown_session(client)
        self._abort.close()
        self._finished.close()

    def _command_line(self, command: str | None, env: dict[str, Any]) -> str:
        if command is None:  # shell(): the remote login shell
            return ""
        return remote_command(command, env) if self.inline_env else command

    def _watch_window_size(self) -> None:
        # OpenSSH's own mux client relays SIGWINCH to the master, which then
        # rereads the size of every pty it was handed: do the same.
        if threading.current_thread() is not threading.main_thread():
            return
        self._old_winch = signal.signal(signal.SIGWINCH, self.handle_window_change)

    def handle_window_change(self, signum: int, frame: Any) -> None:
        fd, pid = self._stdout_fd, self.context.master_pid
        if fd is None or pid is None:
            return
        cols, rows = pty_size()
        try:
            fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
            os.kill(pid, signal.SIGWINCH)
        except OSError:
            pass  # the session or the master is already gone

    # -- the session's streams -----------------------------------------------

    def _read(self, fd: int | None, num_bytes: int) -> bytes:
        if fd is None:
            return b""
        if fd not in _readable([fd, self._abort.read_fd]):
            return b""  # aborted: stop reading now rather than at the remote's EOF
        try:
            return os.read(fd, num_bytes)
        except OSError as exc:
            if exc.errno == errno.EIO:  # a pty whose other end is closed: its EOF
                return b""
            raise

    def read_proc_stdout(self, num_bytes: int) -> bytes:
        return self._read(self._stdout_fd, num_bytes)

    def read_proc_stderr(self, num_bytes: int) -> bytes:
        return self._read(self._stderr_fd, num_bytes)

    def read_proc_output(self, reader: Callable[[int], bytes]) -> Generator[str, None, None]:
        # An incremental decoder keeps a multi-byte character split across two
        # reads intact (invoke decodes each chunk on its own).
        decoder = codecs.getincrementaldecoder(self.encoding)("replace")
        while True:
            data = reader(self.read_chunk_size)
            text = decoder.decode(data, final=not data)
            if text:
                yield text
            if not data:
                return

    def _handle_output(self, *args: Any, **kwargs: Any) -> None:
        try:
            super()._handle_output(*args, **kwargs)
        except BaseException:
            self._abort.ring()  # e.g. a watcher gave up: don't wait for the remote
            raise

    def _write_proc_stdin(self, data: bytes) -> None:
        fd = self._stdin_fd
        if fd is None:
            return
        view = memoryview(data)
        try:
            while view:
                written = os.write(fd, view)
                view = view[written:]
        except OSError as exc:
            if exc.errno in (errno.EPIPE, errno.EBADF, errno.EIO):
                return  # the session has ended; nothing reads stdin any more
            raise

    def close_proc_stdin(self) -> None:
        if not self.using_pty and self._stdin_fd is not None:
            fd, self._stdin_fd = self._stdin_fd, None
            os.close(fd)

    def handle_stdin(self, input_: IO[Any], output: IO[Any], echo: bool | None = False) -> None:
        fd = _streaming_fileno(input_)
        if fd is None:
            self._copy_stream(input_)
            return
        decoder = codecs.getincrementaldecoder(self.encoding)("replace")
        terminal = os.isatty(fd)
        with character_buffered(input_):
            while True:
                if fd not in _readable([fd, self._finished.read_fd, self._abort.read_fd]):
                    return
                if terminal:
                    data = self.read_our_stdin(input_)
                    if data is None:
                        continue
                    eof = not data
                else:
                    raw = os.read(fd, self.read_chunk_size)
                    data = decoder.decode(raw, final=not raw)
                    eof = not raw
                if data:
                    self.write_proc_stdin(data)
                if eof:
                    self.close_proc_stdin()
                    return
                if echo is None:
                    echo = self.should_echo_stdin(input_, output)
                if echo:
                    self.write_our_output(stream=output, string=data)

    def _copy_stream(self, input_: IO[Any]) -> None:
        """Feed a file-like object with no descriptor (StringIO, BytesIO) to stdin."""
        while not self._abort.rung.is_set():
            try:
                data = input_.read(self.read_chunk_size)
            except (OSError, ValueError):
                return  # unreadable (e.g. pytest's captured stdin): as if none
            if not data:
                self.close_proc_stdin()
                return
            self.write_proc_stdin(data if isinstance(data, str) else self.decode(data))

    # -- waiting and ending --------------------------------------------------

    def wait(self) -> None:
        client = self._client
        if client is None:
            return
        control = client.fileno()
        if control >= 0 and control in _readable([control, self._abort.read_fd]):
            self._exit_status = client.wait_exit()
        if client.tty_alloc_failed:
            log.warning("%s: the server gave no pty; ran without one", self.context.original_host)
        if self._exit_status is not None or self._abort.rung.is_set():
            return  # an exit status; or timed out, or an I/O thread died
        if not self.context.session_is_open(client):
            # The connection was closed under us: stop reading too, since
            # sshd keeps a remote command without a pty running.
            self._abort.ring()
            return
        # No exit message: the remote process died of a signal, or the master
        # lost its connection. Only the master can tell which.
        if self.context.mux_master.alive() is None:
            raise MasterLost(
                f"{self.context.original_host}: the SSH master went away while "
                f"running {self.result_kwargs['command']!r}"
            )

    @property
    def process_is_finished(self) -> bool:
        return self._client is None or self._exit_status is not None or self._abort.rung.is_set()

    def returncode(self) -> int:
        # paramiko reports -1 when a session ends with no exit status (a remote
        # process killed by a signal): stock Fabric users see the same value.
        return self._exit_status if self._exit_status is not None else -1

    def send_interrupt(self, interrupt: KeyboardInterrupt) -> None:
        if self.using_pty:
            self.write_proc_stdin("\x03")  # the remote pty turns it into SIGINT
        else:
            # Without a pty there is no way to signal the remote process: stop
            # reading and let stop() close the session.
            self._abort.ring()
            raise interrupt

    @property
    def timed_out(self) -> bool:
        # Set by kill() itself: invoke's check (the timer thread has ended)
        # races with the wake-up that kill() causes.
        return self._killed

    def kill(self) -> None:
        self._killed = True
        self._abort.ring()
        client = self._client
        if client is not None:
            client.shutdown()

    def stop(self) -> None:
        if self._stopped:  # a Promise may be joined twice
            return
        self._stopped = True
        if self._timer:
            self._timer.cancel()
        if self._old_winch is not None:
            signal.signal(signal.SIGWINCH, self._old_winch)
            self._old_winch = None
        client, self._client = self._client, None
        if client is not None:
            self.context.session_closed(client)
        # With a pty, stdin and stdout are one descriptor: close each once.
        fds = {self._stdin_fd, self._stdout_fd, self._stderr_fd} - {None}
        self._stdin_fd = self._stdout_fd = self._stderr_fd = None
        for fd in fds:
            try:
                os.close(fd)  # type: ignore[arg-type]
            except OSError:
                pass
        self._abort.close()
        self._finished.close()
