"""Rolling runs: a fleet in batches, and a failure budget that stops the rollout.

``serial`` takes Ansible's forms: a number of hosts a batch, a percentage of the
run's hosts, or a list of them for batch after batch, the last one repeated
(``1,10%,100%``: a canary, then a tenth of the fleet, then the rest). A
percentage is rounded down, to one host at least.

``max_fail`` is how many hosts may fail before the rollout stops: a count
(``2``: the third failure stops it), or a percentage of the hosts started so far
(``10%``). It is checked after each task: once over budget, no task starts on
any host and no batch after. A rolling run with no budget given stops at the
first failure, as a canary should. Pure functions: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, NamedTuple, TypeVar

__all__ = ["BatchSize", "Budget", "batched", "parse_budget", "parse_serial"]

T = TypeVar("T")

#: ASCII digits only (``\d`` takes any Unicode digit), and not thousands of them.
_SIZE = re.compile("([0-9]{1,18})(%?)")


class BatchSize(NamedTuple):
    """One batch's size: ``number`` hosts, or ``number`` percent of the run's."""

    number: int
    percent: bool = False

    def of(self, total: int) -> int:
        if not self.percent:
            return self.number
        return max(1, total * self.number // 100)

    def __str__(self) -> str:
        return f"{self.number}{'%' if self.percent else ''}"


class Budget(NamedTuple):
    """How many hosts may fail: ``number`` of them, or ``number`` percent of those
    started so far."""

    number: int
    percent: bool = False

    def exceeded(self, failed: int, started: int) -> bool:
        if self.percent:
            return failed * 100 > self.number * started
        return failed > self.number

    def __str__(self) -> str:
        return f"{self.number}{'%' if self.percent else ''}"


def _size(item: Any, what: str) -> tuple[int, bool]:
    """A count or a percentage, from a number or text (``5``, ``"5"``, ``"20%"``)."""
    if isinstance(item, bool):
        raise ValueError(what)
    if isinstance(item, float) and item.is_integer():
        item = int(item)
    if isinstance(item, int):
        return item, False
    match = _SIZE.fullmatch(item.strip()) if isinstance(item, str) else None
    if match is None:
        raise ValueError(what)
    return int(match.group(1)), bool(match.group(2))


def parse_serial(value: Any) -> tuple[BatchSize, ...] | None:
    """``mux.serial`` as batch sizes; None for no batches.

    :raises ValueError: naming what it takes.
    """
    takes = (
        "a number of hosts a batch, a percentage (20%), or a list of them (1,10%,100%), "
        "each more than 0 (and percentages up to 100%)"
    )
    if value is None or value is False or (isinstance(value, str) and not value.strip()):
        return None
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items:
        items = [items]
    sizes = []
    for item in items:
        number, percent = _size(item, takes)
        if number < 1 or (percent and number > 100):
            raise ValueError(takes)
        sizes.append(BatchSize(number, percent))
    return tuple(sizes)


def parse_budget(value: Any) -> Budget | None:
    """``mux.max_fail`` as a budget; None when unset.

    :raises ValueError: naming what it takes.
    """
    takes = "a number of hosts (0 or more) or a percentage (0% to 100%)"
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    number, percent = _size(value, takes)
    if number < 0 or (percent and number > 100):
        raise ValueError(takes)
    return Budget(number, percent)


def batched(hosts: Sequence[T], sizes: Sequence[BatchSize] | None) -> list[list[T]]:
    """``hosts`` in batches of ``sizes``, the last size repeated; one batch of all
    of them without sizes."""
    if not sizes:
        return [list(hosts)] if hosts else []
    batches: list[list[T]] = []
    start, index = 0, 0
    while start < len(hosts):
        size = sizes[min(index, len(sizes) - 1)].of(len(hosts))
        batches.append(list(hosts[start : start + size]))
        start += size
        index += 1
    return batches
