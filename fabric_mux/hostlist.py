"""Host lists as fleet tools write them: ranges in, ranges out (pdsh, ClusterShell).

``web[01-03,07].dc2`` names web01.dc2, web02.dc2, web03.dc2 and web07.dc2: a
bracket holds numbers and ranges, comma-separated, and a range keeps the padding
of its first number (``[08-10]``: 08, 09, 10). Several brackets multiply
(``r[1-2]n[1-3]``: six hosts). A bracket that holds a colon is an IPv6 address
(``deploy@[::1]:22``), not a range. :func:`fold` writes a list back the same way.
Pure functions: no I/O.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable, Sequence

from fabric.connection import derive_shorthand

from .exceptions import BadHostList
from .screen import visible

__all__ = ["expand", "expand_all", "fold", "names_no_host", "split_hosts"]

#: A bracket's item: a number or a range, in ASCII digits
#: (``\d`` takes any Unicode digit: fullwidth ones, Arabic-Indic ones).
_RANGE_ITEM = re.compile(r"([0-9]+)(?:-([0-9]+))?")
#: The most hosts one pattern may name: a typo (``[1-1000000]``) is refused, not run.
MAX_RANGE = 100_000
#: The most digits a range's number may have: more is a slip, not a host.
MAX_DIGITS = 18
#: C0 and C1 controls and DEL: no host's name holds one (a host file's stray
#: ``\r``, ``\x0b``, an escape sequence).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_ALL_DIGITS = re.compile("[0-9]+")
#: Characters that show as nothing, or as a blank, though Unicode calls them
#: letters or marks (a Hangul filler, the braille blank, variation selectors): with
#: the format characters and the spaces, they make a name that reads as another.
_BLANK = re.compile(
    "[\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180f\u2800\u3164\ufe00-\ufe0f"
    "\uffa0\U000e0100-\U000e01ef]"
)


def split_hosts(value: str) -> list[str]:
    """A ``-H`` value (or a line of a host file) split on the commas outside
    brackets; blank entries dropped (``web1,`` is ``web1``)."""
    items, depth, start = [], 0, 0
    for index, char in enumerate(value):
        if char == "[":
            depth += 1
        elif char == "]":
            depth = max(0, depth - 1)
        elif char == "," and depth == 0:
            items.append(value[start:index])
            start = index + 1
    items.append(value[start:])
    return [item.strip() for item in items if item.strip()]


#: One bracket's items, each a number and, for a range, its last number (as written).
_Bracket = list[tuple[str, "str | None"]]


def names_no_host(text: str) -> bool:
    """Whether ``user@host:port`` text names no host: blank, or only an account
    or a port (``deploy@``, ``:22``, ``deploy@:22``), which ssh would be asked
    to reach as no host at all."""
    try:
        host = derive_shorthand(text.strip())["host"]
    except ValueError:
        return False  # a host with a port that is no number: its own failure, later
    return host is None or not host.strip()


def expand(pattern: str) -> list[str]:
    """The hosts one pattern names, in its order.

    :raises BadHostList: for a bracket that is neither a range nor an address
        (``web[a-c]``, ``web[3-1]``, ``web[01-``), for more than
        :data:`MAX_RANGE` hosts (counted before any is made), for a range of bare
        numbers (``[0-3]``: an empty ``${CLUSTER}[0-3]``, where ``0`` is the
        address of this machine) or a bare number (``0``), and for a control
        character in the name; naming it.
    """
    control = _CONTROL.search(pattern)
    if control is not None:
        raise BadHostList(
            f"the host name {pattern!r} holds a control character "
            f"({control.group()!r}): no host's name does"
        )
    if visible(pattern) != pattern or not pattern.isprintable() or _BLANK.search(pattern):
        raise BadHostList(
            f"the host name {pattern!a} holds an invisible character: no host's name does"
        )
    pieces: list[str | _Bracket] = []  # text, and the brackets between
    rest = pattern
    while True:
        opening = rest.find("[")
        if opening < 0:
            pieces.append(rest)
            break
        closing = rest.find("]", opening)
        if closing < 0:
            raise _bad(pattern, "a [ with no ]")
        inside = rest[opening + 1 : closing]
        if ":" in inside:  # an IPv6 address: itself
            pieces.append(rest[: closing + 1])
        else:
            pieces.append(rest[:opening])
            pieces.append(_bracket(inside, pattern))
        rest = rest[closing + 1 :]
    if "]" in rest:
        raise _bad(pattern, "a ] with no [")
    brackets = [piece for piece in pieces if not isinstance(piece, str)]
    # Counted before any name is made: h[0-99999]x[0-99999] would be 10^10 names.
    total = math.prod(_size(bracket) for bracket in brackets)
    if total > MAX_RANGE:
        raise _bad(pattern, f"it names {total} hosts, more than {MAX_RANGE}")
    texts = [[piece] if isinstance(piece, str) else _numbers(piece) for piece in pieces]
    hosts = ["".join(combination) for combination in itertools.product(*texts)]
    # The names differ only in the brackets' digits: the first tells for all.
    bare = _bare_number(hosts[0])
    if bare is not None and brackets:
        raise _bad(
            pattern,
            f"its hosts are bare numbers, which are addresses ({bare!r}; 0 is this "
            "machine): is the name before the bracket missing?",
        )
    if bare is not None:  # ${CLUSTER}0 with CLUSTER empty
        raise BadHostList(
            f"the host name {pattern!r} is a bare number, which is an address (0 is this "
            "machine): is the name before it missing?"
        )
    return hosts


def _bracket(inside: str, pattern: str) -> _Bracket:
    """One bracket's items, checked: numbers in ASCII digits, ranges that go up."""
    items: _Bracket = []
    for item in inside.split(","):
        match = _RANGE_ITEM.fullmatch(item.strip())
        if match is None:
            raise _bad(pattern, f"[{inside}] is not numbers and ranges such as [01-10,12]")
        first, last = match.group(1), match.group(2)
        for number in (first, last or ""):
            if len(number) > MAX_DIGITS:
                raise _bad(pattern, f"a number of {len(number)} digits, more than {MAX_DIGITS}")
        if last is not None and int(last) < int(first):
            raise _bad(pattern, f"the range {first}-{last} goes down")
        items.append((first, last))
    return items


def _size(bracket: _Bracket) -> int:
    return sum(int(last) - int(first) + 1 if last else 1 for first, last in bracket)


def _numbers(bracket: _Bracket) -> list[str]:
    """The numbers one bracket names, as text; a range keeps its first number's padding."""
    numbers: list[str] = []
    for first, last in bracket:
        if last is None:
            numbers.append(first)
            continue
        width = len(first) if first.startswith("0") else 0
        numbers.extend(str(number).zfill(width) for number in range(int(first), int(last) + 1))
    return numbers


def _bare_number(host: str) -> str | None:
    """The host part of ``[user@]host[:port]`` if it is only digits (an address)."""
    name = host.rpartition("@")[2]
    if name.startswith("["):
        return None
    name = name.split(":", 1)[0]
    return name if _ALL_DIGITS.fullmatch(name) else None


def _bad(pattern: str, why: str) -> BadHostList:
    shown = pattern if len(pattern) <= 100 else f"{pattern[:60]}...{pattern[-20:]}"
    return BadHostList(f"the host range {shown!r} is not valid: {why}")


def expand_all(patterns: Iterable[str]) -> list[str]:
    """Every host the patterns name, in order, each once."""
    return list(dict.fromkeys(host for pattern in patterns for host in expand(pattern)))


_NUMBERS = re.compile(r"([0-9]+)")


def fold(hosts: Sequence[str]) -> str:
    """``hosts`` written short, as :func:`expand` reads it back: names that differ
    in one number only gather into a bracket there (``web[01-03,07]``,
    ``web[1-2].dc2``). Groups come in the order of their first host; a name with
    no number, or an IPv6 address, stays as it is."""
    shapes: dict[tuple[str, ...], list[list[str]]] = {}
    for host in dict.fromkeys(hosts):
        tokens = _NUMBERS.split(host)
        plain = "[" in host or len(tokens) == 1 or max(map(len, tokens[1::2])) > MAX_DIGITS
        shape = (host,) if plain else tuple(tokens[::2])
        shapes.setdefault(shape, []).append(tokens)
    out = []
    for names in shapes.values():
        if len(names) == 1:
            out.append("".join(names[0]))
            continue
        # Gather on the number whose change leaves the fewest groups (the last on a tie).
        positions = range(1, len(names[0]), 2)
        position = min(reversed(positions), key=lambda at: len(_by_rest(names, at)))
        for rest, numbers in _by_rest(names, position).items():
            head, tail = "".join(rest[:position]), "".join(rest[position:])
            if len(numbers) == 1:
                out.append(f"{head}{numbers[0]}{tail}")
            else:
                out.append(f"{head}[{_runs(numbers)}]{tail}")
    return ",".join(out)


def _by_rest(names: list[list[str]], position: int) -> dict[tuple[str, ...], list[str]]:
    """The numbers at ``position``, by the rest of each name (``position`` left out)."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for tokens in names:
        rest = (*tokens[:position], *tokens[position + 1 :])
        groups.setdefault(rest, []).append(tokens[position])
    return groups


def _runs(numbers: Sequence[str]) -> str:
    """``01,02,03,07`` as ``01-03,07``: runs of consecutive numbers of one width
    (a padded run keeps its width; unpadded numbers run on across widths)."""
    ordered = sorted(set(numbers), key=lambda text: (int(text), len(text)))
    runs: list[list[str]] = []
    for text in ordered:
        if runs:
            last = runs[-1][-1]
            padded = last.startswith("0") or text.startswith("0")
            if int(text) == int(last) + 1 and (len(text) == len(last) or not padded):
                runs[-1].append(text)
                continue
        runs.append([text])
    return ",".join(run[0] if len(run) == 1 else f"{run[0]}-{run[-1]}" for run in runs)
