"""The invoke runner whose "process" is one mux-protocol session.

invoke's ``Runner`` brings watchers, hide/echo, encoding and ``Result``; this
subclass supplies the session and replaces invoke's sleep-polling loops with
waits that wake on events (the exit message, end of output, a timeout).
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import fcntl
import logging
import os
import signal
import struct
import sys
import termios
import threading
import tty
from collections.abc import Callable, Generator
from typing import IO, TYPE_CHECKING, Any

from fabric.runners import Remote
from invoke.runners import Promise, Result
from invoke.terminals import character_buffered, pty_size

from .descriptors import Descriptors, write_all
from .exceptions import MasterLost
from .process import current
from .protocol import SessionInterrupted
from .remotecommand import check_env_names, remote_command
from .screen import LineSink, LineWriter
from .waking import Doorbell, FinishedEvent, readable, streaming_fileno
from .watching import WATCH_WINDOW, WatchedStream, submit

log = logging.getLogger("fabric_mux")

if TYPE_CHECKING:
    from .session import Session, SessionHost

__all__ = ["WATCH_WINDOW", "MuxRemote", "remote_command"]


class MuxRemote(Remote):  # type: ignore[misc]
    """Runs a command as one session on the connection's master.

    Without a pty the session gets three pipes; with one, the slave end of a
    local pty is passed for all three with the want-tty flag, and the master
    allocates the remote pty from its size and modes.
    """

    read_chunk_size = 65536
    context: SessionHost

    def __init__(self, context: SessionHost, inline_env: bool | None = None) -> None:
        super().__init__(context, inline_env=inline_env)
        self._session: Session | None = None
        #: The session's pipes (or pty) on our side; each closed once.
        self._fds = Descriptors("a session's pipes")
        #: Held while stdin is written to or closed: both I/O threads write
        #: (the stdin thread, and watchers' answers) and one of them closes it.
        self._stdin_lock = threading.Lock()
        #: An unjoined asynchronous run whose command ended and whose output
        #: was read: its descriptors are closed already (see make_promise).
        self._settled = False
        self._lost_master = False
        self._joining = False
        self._release_lock = threading.Lock()
        self._stdin_fd: int | None = None
        self._stdout_fd: int | None = None
        self._stderr_fd: int | None = None
        self._exit_status: int | None = None
        #: Rung by a timeout and by a dying I/O thread: every wait stops.
        self._abort: Doorbell | None = None
        #: Rung when the program has finished: the stdin thread stops.
        self._finished: Doorbell | None = None
        self._old_winch: Any = None
        self._killed = False
        self._stopped = False
        #: Whether Ctrl-C's line (the command may run on) was said for this run.
        self._said_interrupted = False
        self._watched: dict[int, WatchedStream] = {}
        self._watch_lock = threading.Lock()
        #: In a parallel run, our output a whole line at a time, with the host first.
        self._lines: dict[int, LineWriter] = {}

    @property
    def _bells(self) -> tuple[Doorbell, Doorbell]:
        assert self._abort is not None and self._finished is not None  # made in start()
        return self._abort, self._finished

    def _run_body(self, command: str, **kwargs: Any) -> Any:
        try:
            return super()._run_body(command, **kwargs)
        except KeyboardInterrupt as interrupt:
            # invoke forwards Ctrl-C only once it waits (send_interrupt). Before
            # that, as the session opens or its threads start, the command runs
            # once the master has its request; not if a slot or a login was still
            # awaited (nothing was sent), nor on a pty, which its closing ends.
            sent = isinstance(interrupt, SessionInterrupted) or self._session is not None
            if sent and not (self._said_interrupted or self._disowned or self.using_pty):
                with contextlib.suppress(OSError):  # a closed stderr: the Ctrl-C goes on
                    self._say_interrupted()
            raise

    # -- start -------------------------------------------------------------

    def start(
        self, command: str | None, shell: str, env: dict[str, Any], timeout: Any = None
    ) -> None:
        text = self._command_line(command, env)
        if env and not self.inline_env:
            check_env_names(env)
            self.context.check_env_sent(sorted(env))
        flags: dict[str, Any] = {
            "env": [] if self.inline_env else [f"{k}={v}" for k, v in sorted(env.items())],
            "agent": self.context.master_forwards_agent,
        }
        try:
            self._abort = Doorbell()
            self._finished = Doorbell()
            self.program_finished = FinishedEvent(self._finished)
            if self._disowned:
                self._start_disowned(text, flags)
            elif self.using_pty:
                self._start_on_pty(text, flags)
            else:
                self._start_on_pipes(text, flags)
        except BaseException:
            self._release()
            raise
        if not self._disowned and not self.streams["in"] and not self.watchers:
            # No stdin at all (in_stream=False, as in parallel and asynchronous
            # runs) and nothing to answer prompts: the command reads its end
            # rather than waiting for input that cannot come.
            self.close_proc_stdin()

    def _start_on_pipes(self, text: str, flags: dict[str, Any]) -> None:
        stdin_r, self._stdin_fd = self._fds.pipe()
        self._stdout_fd, stdout_w = self._fds.pipe()
        self._stderr_fd, stderr_w = self._fds.pipe()
        try:
            self._session = self.context.open_session(text, (stdin_r, stdout_w, stderr_w), **flags)
        finally:
            self._fds.close(stdin_r, stdout_w, stderr_w)  # the master has its own copies

    def _start_on_pty(self, text: str, flags: dict[str, Any]) -> None:
        pty_fd, slave_fd = self._fds.openpty()
        self._stdin_fd = self._stdout_fd = pty_fd
        try:
            cols, rows = pty_size()
            fcntl.ioctl(slave_fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
            term = os.environ.get("TERM", "vt100")
            self._session = self.context.open_session(
                text, (slave_fd,) * 3, tty=True, term=term, **flags
            )
            # The master read the pty's modes when it took the descriptor;
            # from here on our local pty must pass bytes through untouched.
            tty.setraw(slave_fd)
        finally:
            self._fds.close(slave_fd)
        self._watch_window_size()

    def _start_disowned(self, text: str, flags: dict[str, Any]) -> None:
        # invoke returns at once and never calls stop(): nothing here may need
        # us later. The command gets no stdio from us; its session lasts until
        # the connection closes (or this process ends), as with stock Fabric.
        null = self._fds.open(os.devnull, os.O_RDWR)
        try:
            session = self.context.open_session(text, (null, null, null), **flags)
        finally:
            self._fds.close(null)
        self.context.disown_session(session)
        self._release()

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
        abort, _ = self._bells
        if fd not in readable([fd, abort.read_fd]):
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
            self._bells[0].ring()  # e.g. a watcher gave up: don't wait for the remote
            raise

    def _lines_to(self) -> tuple[str, LineSink] | None:
        """Where output goes a whole line at a time (several hosts at once): the
        prefix of each line, and the screen or what gathers the host's lines;
        None: as it comes, as invoke writes it."""
        prefix, sink = self.context.output_prefix, self.context.output_sink
        if not prefix and sink is None:
            return None
        return prefix or "", sink if sink is not None else current().screen

    def echo(self, command: str) -> None:
        lines = self._lines_to()
        if lines is None:
            super().echo(command)
            return
        # In a parallel run the echoed command is marked with its host too.
        prefix, sink = lines
        text = self.opts["echo_format"].format(command=command)
        sink.write_lines(sys.stdout, text.split("\n"), prefix, echoed=True)

    def write_our_output(self, stream: IO[str], string: str) -> None:
        lines = self._lines_to()
        if lines is None:
            super().write_our_output(stream, string)
            return
        writer = self._lines.get(id(stream))
        if writer is None:
            prefix, sink = lines
            writer = self._lines[id(stream)] = LineWriter(prefix, stream, sink)
        writer.write(string)

    def respond(self, buffer_: list[str]) -> None:
        """invoke's watchers, at a cost that does not grow with the output.

        invoke joins the whole buffer for every chunk (quadratic in the output,
        watchers or not). Here nothing is joined without watchers, and
        :class:`~invoke.watchers.Responder` watchers (sudo's among them) see the
        stream's last :data:`WATCH_WINDOW` characters, their positions moved to
        match. Other watchers get the whole stream, as invoke gives it.
        """
        if not self.watchers:
            return
        with self._watch_lock:
            view = self._watched.setdefault(id(buffer_), WatchedStream())
            view.update(buffer_)
            for watcher in self.watchers:
                for response in submit(watcher, view, buffer_):
                    self.write_proc_stdin(response)

    def _write_proc_stdin(self, data: bytes) -> None:
        with self._stdin_lock:
            fd = self._stdin_fd
            if fd is None:
                return
            try:
                write_all(fd, data)
            except OSError as exc:
                if exc.errno in (errno.EPIPE, errno.EIO):
                    return  # the session has ended; nothing reads stdin any more
                raise

    def close_proc_stdin(self) -> None:
        if self.using_pty:
            return
        with self._stdin_lock:
            fd, self._stdin_fd = self._stdin_fd, None
            self._fds.close(fd)

    def handle_stdin(self, input_: IO[Any], output: IO[Any], echo: bool | None = False) -> None:
        fd = streaming_fileno(input_)
        if fd is None:
            self._copy_stream(input_)
            return
        decoder = codecs.getincrementaldecoder(self.encoding)("replace")
        terminal = os.isatty(fd)
        with character_buffered(input_):
            while True:
                abort, finished = self._bells
                if fd not in readable([fd, finished.read_fd, abort.read_fd]):
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
        abort, _ = self._bells
        while not abort.rung.is_set():
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
        session = self._session
        if session is None:
            return
        if self._settled:  # it has ended, and its descriptors are closed
            self._exit_status = session.wait_exit()
            if self._lost_master:
                raise self._master_lost()
            return
        abort, _ = self._bells
        control = session.fileno()
        if control >= 0 and control in readable([control, abort.read_fd]):
            self._exit_status = session.wait_exit()
        if session.tty_alloc_failed:
            log.warning("%s: the server gave no pty; ran without one", self.context.original_host)
        if self._exit_status is not None or abort.rung.is_set():
            return  # an exit status; or timed out, or an I/O thread died
        if session.closed:
            # The connection was closed under us: stop reading too, since
            # sshd keeps a remote command without a pty running.
            abort.ring()
            return
        # No exit message: the remote process died of a signal, or the master
        # lost its connection. Only the master can tell which.
        if not session.master_alive():
            raise self._master_lost()

    def _master_lost(self) -> MasterLost:
        return MasterLost(
            f"{self.context.original_host}: the SSH master went away while "
            f"running {self.result_kwargs['command']!r}"
        )

    @property
    def process_is_finished(self) -> bool:
        abort = self._abort
        return (
            self._session is None
            or self._exit_status is not None
            or bool(abort and abort.rung.is_set())
        )

    def returncode(self) -> int:
        # paramiko reports -1 when a session ends with no exit status (a remote
        # process killed by a signal): stock Fabric users see the same value.
        return self._exit_status if self._exit_status is not None else -1

    def send_interrupt(self, interrupt: KeyboardInterrupt) -> None:
        if self.using_pty:
            self.write_proc_stdin("\x03")  # the remote pty turns it into SIGINT
            return
        self._bells[0].ring()  # stop waiting
        self._say_interrupted()
        raise interrupt

    def _say_interrupted(self) -> None:
        # OpenSSH's mux protocol has no message to signal a session, and sshd
        # leaves a command without a pty running when its channel closes: say
        # so, once.
        self._said_interrupted = True
        sys.stderr.write(
            f"fabric-mux: {self.context.original_host}: interrupted; the remote command may "
            f"still be running there: {self.result_kwargs.get('command', '')!r} "
            "(only a pty carries Ctrl-C to it: run it with pty=True)\n"
        )
        sys.stderr.flush()

    @property
    def timed_out(self) -> bool:
        # Set by kill() itself: invoke's check (the timer thread has ended)
        # races with the wake-up that kill() causes.
        return self._killed

    def kill(self) -> None:
        self._killed = True
        self._bells[0].ring()
        session = self._session
        if session is not None:
            session.wake()

    def stop(self) -> None:
        if self._stopped:  # a Promise may be joined twice
            return
        self._stopped = True
        if self._timer:
            self._timer.cancel()
        if self._old_winch is not None:
            signal.signal(signal.SIGWINCH, self._old_winch)
            self._old_winch = None
        self._release()

    def make_promise(self) -> Promise:
        promise: Promise = super().make_promise()
        if self._session is not None:
            # Nobody may ever join it: once the command ends its slot comes
            # back, and once its output is read, its descriptors too.
            self._session.free_slot_at_exit(then=self._settle)
        return promise

    def _finish(self) -> Result:
        with self._release_lock:
            self._joining = True  # from here on, stop() releases everything
        result: Result = super()._finish()
        return result

    def _settle(self) -> None:
        """The command ended and nobody has joined yet: once its output is read,
        close the session and our descriptors, keeping what a late join reports."""
        for thread in list(self.threads.values()):
            thread.join()
        with self._release_lock:
            session = self._session
            if self._joining or session is None:
                return
            self._lost_master = (
                session.wait_exit() is None and not session.closed and not session.master_alive()
            )
            self._settled = True
            session.close()
            self._close_descriptors()

    def _release(self) -> None:
        """Close the session and every descriptor of ours; safe to call again."""
        for writer in self._lines.values():
            writer.close()
        self._lines.clear()
        session, self._session = self._session, None
        if session is not None:
            session.close()  # first: a blocked stdin write then fails and lets go
        self._close_descriptors()

    def _close_descriptors(self) -> None:
        with self._stdin_lock:
            self._stdin_fd = self._stdout_fd = self._stderr_fd = None
        self._fds.close_all()
        for bell in (self._abort, self._finished):
            if bell is not None:
                bell.close()
