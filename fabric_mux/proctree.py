"""A throwaway server's processes: every descendant of its listener, found in
``/proc`` (each connection's sshd calls setsid() and outlives the listener),
stopped, killed, and waited out."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

__all__ = ["TIMEOUT", "alive", "descendants", "send_signal", "wait_gone"]

#: How long sshd may take to start listening, and its processes to die.
TIMEOUT = 10.0


def send_signal(pid: int, signum: signal.Signals) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _stat(pid: int) -> tuple[str, int] | None:
    """A process's state letter and parent pid; ``None`` once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes().decode("ascii", "replace")
    except OSError:
        return None
    # The command name in parentheses may hold spaces and parentheses itself.
    state, ppid = stat[stat.rindex(")") + 2 :].split()[:2]
    return state, int(ppid)


def descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return set()
    for name in entries:
        if name.isdigit():
            stat = _stat(int(name))
            if stat is not None:
                children.setdefault(stat[1], []).append(int(name))
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    stat = _stat(pid)
    # A zombie is dead: whoever inherited it may never reap it.
    return stat is not None and stat[0] != "Z"


def wait_gone(pids: set[int]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while True:
        left = sorted(pid for pid in pids if alive(pid))
        if not left:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"sshd processes still alive after SIGKILL: {left}")
        time.sleep(0.01)
