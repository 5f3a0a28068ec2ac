"""Waiting for a condition with a deadline: how tests synchronise, never with a bare sleep."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path


def wait_until(condition: Callable[[], bool], deadline: float = 10.0) -> bool:
    """Poll ``condition`` until it holds or ``deadline`` seconds pass; its last value."""
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            return False
        time.sleep(0.02)
    return True


def process_gone(pid: int) -> bool:
    """Whether ``pid`` has ended: gone, or a zombie nobody has reaped yet."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes().decode("ascii", "replace")
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] == "Z"
