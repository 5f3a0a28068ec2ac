"""Asking the user on their terminal, as ssh itself would: one question at a time,
a secret without echo, and the terminal's settings put back if an interrupt cuts
a question short."""

from __future__ import annotations

import atexit
import contextlib
import getpass
import io
import os
import termios
from collections.abc import Callable, Iterator

from .process import current

__all__ = ["Terminal", "ask_on_terminal", "restore_terminal", "terminal_available"]

Terminal = Callable[[str, str], "str | None"]


def terminal_available() -> bool:
    """Whether this process has a terminal to ask the user on."""
    try:
        os.close(os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY))
    except OSError:
        return False
    return True


def ask_on_terminal(prompt: str, hint: str = "") -> str | None:
    """Ask the user on their terminal, as ssh itself would; None without one.

    ``hint`` is ssh's ``SSH_ASKPASS_PROMPT``: ``none`` is a notice to show
    (touch your key), ``confirm`` a yes/no question. A host-key question is
    asked with echo, like ssh does; secrets without.
    """
    # One question at a time: masters started together must not interleave theirs.
    with current().terminal_lock:
        try:
            fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
        except OSError:
            return None
        with io.TextIOWrapper(io.FileIO(fd, "w+"), write_through=True) as tty:
            if hint == "none":
                tty.write(prompt.rstrip() + "\n")
                tty.flush()
                return ""
            if hint == "confirm" or "(yes/no" in prompt:
                tty.write(prompt)
                tty.flush()
                line = tty.readline()
                return line.rstrip("\n") if line else None
            with _echo_restored_on_exit(fd):
                try:
                    return getpass.getpass(prompt, stream=tty)
                except (EOFError, termios.error):
                    return None


@contextlib.contextmanager
def _echo_restored_on_exit(fd: int) -> Iterator[None]:
    """Keep the terminal's settings while a secret is asked without echo, so that a
    Ctrl-C in the middle (the main thread ends the process; this thread never
    gets to put echo back) still gives the user their terminal back whole."""
    try:
        saved = termios.tcgetattr(fd)
    except termios.error:
        yield
        return
    state = current()
    state.terminal_saved = saved
    if not state.terminal_guarded:
        state.terminal_guarded = True
        atexit.register(restore_terminal)
    try:
        yield
    finally:
        state.terminal_saved = None


def restore_terminal() -> None:
    """Put the terminal back as it was before a question an interrupt cut short."""
    saved = current().terminal_saved
    if saved is None:
        return
    current().terminal_saved = None
    try:
        fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        return
    try:
        termios.tcsetattr(fd, termios.TCSAFLUSH, saved)
        os.write(fd, b"\n")  # off the prompt's line
    except OSError:
        pass
    finally:
        os.close(fd)
