"""``ssh -G`` asked while Python is still loading Fabric.

A first run over many hosts asks OpenSSH's view of each one (``ssh -G``, about
8 ms of CPU apiece) before any of their masters can start. Loading Fabric takes
a quarter of a second on one core, and meanwhile the other core is idle. So the
``fabmux`` command guesses the questions its run will ask from its command line
alone: ``ssh -v -G [-F FILE] -- HOST`` for each plain host of ``-H``, with
``-S``'s file. The guesses are asked one at a time, in the background, in the
order of the hosts.

A guess is only a guess. Its answer is used only when the run asks exactly that
question, with the environment unchanged, and when every file ssh read is older
than the moment it was asked (else ssh may have read a version that has since
changed, see :mod:`fabric_mux.resolve`). Otherwise it is dropped, and the
question is asked again.

- A config that runs a command (``Match exec``) has it run once more, for the
  first guess only: no other guess is asked after it.
- The first question the run asks that was not guessed shows the guesses were
  wrong (the project's config chose another user, port or ssh): no more are asked.
- Nothing is guessed when the control folder (``FABRIC_MUX_CONTROL_DIR``, else
  the default one) holds answers kept by an earlier run: the run finds its own
  there.
- The first answer the run finds kept from an earlier run (see
  :mod:`fabric_mux.resolve`) shows the others are likely kept too: no more are asked.
- A command line whose options change the questions (``-i``, ``-t``,
  ``--mux-control-path``, ``--no-mux``) or that asks none (``--list``,
  ``--help``...) guesses nothing.

Stdlib only: this runs before Fabric is imported.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from .places import KEPT, default_control_dirs

__all__ = ["Asked", "environment", "guess", "ran_a_command", "stop", "stop_guessing", "take"]

#: Options after which the run asks other questions, or none.
_NO_GUESS = frozenset(
    "-i --identity -t --connect-timeout --mux-control-path --no-mux -l --list -h --help"
    " -V --version --complete --print-completion-script".split()
)
#: What ``ssh -v`` logs as its config runs a ``Match exec`` command.
_RAN_A_COMMAND = re.compile(r"^debug1: Executing command", re.MULTILINE)
#: At most this many hosts are guessed: past it, guessing runs on into the logins.
MOST = 64


class Asked(NamedTuple):
    """A guessed question's answer, as ssh gave it."""

    stdout: str
    stderr: str
    returncode: int
    #: When it was asked (``time.time_ns()``), before ssh read anything.
    began_ns: int
    #: :func:`environment` when it was asked.
    environment: tuple[tuple[str, str], ...]


def environment() -> tuple[tuple[str, str], ...]:
    """The environment, as an answer depends on it (``${NAME}``, ``HOME``, ``USER``)."""
    return tuple(sorted(os.environ.items()))


def ran_a_command(log: str) -> bool:
    """Whether ssh's ``-v`` log shows its config ran a command (``Match exec``): an
    answer that such a command could change next time."""
    return _RAN_A_COMMAND.search(log) is not None


def questions(argv: Sequence[str]) -> list[tuple[str, ...]]:
    """The ``ssh -v -G`` argvs that ``fabmux ARGV`` would ask first, if it can tell."""
    hosts: str | None = None
    ssh_config: str | None = None
    words = list(argv)
    for index, word in enumerate(words):
        if word == "--":
            break
        name, equals, value = word.partition("=")
        if name in _NO_GUESS:
            return []
        if name in ("-H", "--hosts", "-S", "--ssh-config"):
            if not equals:
                if index + 1 >= len(words):
                    return []
                value = words[index + 1]
            if name in ("-H", "--hosts"):
                hosts = value
            else:
                ssh_config = value
    ssh = shutil.which("ssh")
    if not hosts or ssh is None:
        return []
    # Named as the run names them: blanks around a name dropped (see executor._named_hosts).
    names = (host.strip() for host in hosts.split(","))
    plain = [host for host in names if host and not set(host) & set("@:[]/ ")]
    config = ["-F", ssh_config] if ssh_config else []
    return [(ssh, "-v", "-G", *config, "--", host) for host in dict.fromkeys(plain)][:MOST]


class _Guesses:
    """The guessed questions, asked one at a time by a thread of their own."""

    def __init__(self, asked: Sequence[tuple[str, ...]]) -> None:
        self._guessed = frozenset(asked)
        self._waiting = deque(asked)
        self._answers: dict[tuple[str, ...], Asked] = {}
        self._asking: tuple[str, ...] | None = None
        self._stopped = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(
            target=self._ask_all, name="fabric-mux ssh -G guesses", daemon=True
        )
        self._thread.start()

    def _ask_all(self) -> None:
        if _kept_before():
            return
        while True:
            with self._changed:
                if self._stopped or not self._waiting:
                    return
                question = self._asking = self._waiting.popleft()
            answer = _ask(question)
            with self._changed:
                if answer is not None and not self._stopped:
                    self._answers[question] = answer
                    if ran_a_command(answer.stderr):
                        # A Match exec: its answer is not used (the command could
                        # answer otherwise later), and no other is asked for it.
                        self._waiting.clear()
                self._asking = None
                self._changed.notify_all()

    def take(self, question: tuple[str, ...]) -> Asked | None:
        with self._changed:
            if question not in self._guessed:
                self._stop()  # the run asks otherwise: the rest are wrong too
                return None
            while self._asking == question:
                self._changed.wait()
            answer = self._answers.pop(question, None)
            if answer is None and question in self._waiting:
                self._waiting.remove(question)  # not asked yet: the caller asks it now
            return answer

    def stop_guessing(self) -> None:
        with self._changed:
            self._waiting.clear()

    def _stop(self) -> None:
        self._stopped = True
        self._waiting.clear()
        self._answers.clear()

    def stop(self) -> None:
        with self._changed:
            self._stop()
        self._thread.join()  # the one being asked takes milliseconds


def _kept_before() -> bool:
    """Whether the control folder holds answers kept by an earlier run: the run will
    find its answers there (see :mod:`fabric_mux.resolve`), and guesses would be
    asked for nothing. (A folder that only the project's config names is not seen
    here: the first kept answer the run finds ends the guessing then.)"""
    named = os.environ.get("FABRIC_MUX_CONTROL_DIR")
    folders = [Path(named).expanduser()] if named else default_control_dirs()
    for folder in folders:
        try:
            with os.scandir(folder / KEPT) as entries:
                if next(entries, None) is not None:
                    return True
        except OSError:
            continue
    return False


def _ask(question: tuple[str, ...]) -> Asked | None:
    began = time.time_ns()
    asked_in = environment()
    try:
        proc = subprocess.run(question, stdin=subprocess.DEVNULL, capture_output=True, check=False)
    except OSError:
        return None
    return Asked(
        proc.stdout.decode("utf-8", "replace"),
        proc.stderr.decode("utf-8", "replace"),
        proc.returncode,
        began,
        asked_in,
    )


class _Held:
    """The process's guesses, while they are being asked or taken."""

    guesses: _Guesses | None = None


def guess(argv: Sequence[str]) -> None:
    """Start asking what ``fabmux ARGV`` is likely to ask (see the module's notes)."""
    asked = questions(argv)
    if asked and _Held.guesses is None:
        _Held.guesses = _Guesses(asked)


def take(question: Sequence[str]) -> Asked | None:
    """The answer to ``question`` (an ``ssh -v -G`` argv) if it was guessed and
    asked; waits while it is being asked. None: ask it yourself."""
    guesses = _Held.guesses
    return guesses.take(tuple(question)) if guesses is not None else None


def stop_guessing() -> None:
    """Ask no more guesses (the run found its answers elsewhere); those asked are
    still there to take."""
    guesses = _Held.guesses
    if guesses is not None:
        guesses.stop_guessing()


def stop() -> None:
    """Ask no more; wait for the one being asked."""
    guesses, _Held.guesses = _Held.guesses, None
    if guesses is not None:
        guesses.stop()


def _forget_in_child() -> None:
    # A forked child has no thread asking: a guess it found being asked would
    # never be answered. It asks for itself.
    _Held.guesses = None


os.register_at_fork(after_in_child=_forget_in_child)
