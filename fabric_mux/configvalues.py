"""Each ``mux`` value read and checked, from fabric.yaml, the environment or a
flag: flags, numbers, times, paths, ssh options; what it takes said in a
:class:`~fabric_mux.exceptions.BadConfig` that names the key (see
:mod:`fabric_mux.config`)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from .argv import persist_value, ssh_options
from .exceptions import BadConfig
from .places import default_failed_hosts

__all__ = ["MAX_PERSIST", "MAX_REPLY_SECONDS", "Values"]

T = TypeVar("T")

_YES = ("1", "yes", "true", "on")
_NO = ("0", "no", "false", "off", "")
# Numbers in ASCII digits only: \d and str.isdigit() take any Unicode digit
# (Arabic-Indic, fullwidth, superscripts), which int() then refuses or ssh reads
# otherwise. Bounded: a longer number is a slip, and int() of thousands of digits fails.
_WHOLE = re.compile("[0-9]{1,18}")
_DECIMAL = re.compile(r"[0-9]{1,18}(\.[0-9]*)?|\.[0-9]+")
#: ControlPersist's time format (sshd_config(5) TIME FORMATS): 90, 10m, 1h30m.
_TIME = re.compile("([0-9]{1,10})([smhdw]?)", re.IGNORECASE)
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
#: The longest ControlPersist ssh takes (its convtime() stops at INT_MAX seconds).
MAX_PERSIST = 2**31 - 1
#: The longest reply_timeout: a socket timeout past what the platform's clock can
#: hold overflows, and no master takes a day to answer.
MAX_REPLY_SECONDS = 86400
#: What a path handed to ssh (or to the OS) cannot hold: ssh reads an option with
#: spaces only between double quotes (with no escape for one before 8.7), a line
#: break ends its option, and no path holds a NUL.
_NOT_IN_PATHS = ('"', "\n", "\r", "\0")


def _blank(value: Any) -> bool:
    """Unset: null, or text with nothing in it (``FABRIC_MUX_POOL_SIZE=``)."""
    return value is None or (isinstance(value, str) and not value.strip())


class Values:
    """The ``mux`` values, each read as its key takes it; a wrong one is a
    :class:`BadConfig` that names the key (or the flag it came from, ``shown``).
    Every key takes text too, as environment variables give it
    (``FABRIC_MUX_PARALLEL=yes``, ``FABRIC_MUX_PERSIST=10m``), read by the same rules."""

    def __init__(self, values: dict[str, Any], shown: Mapping[str, str] | None = None) -> None:
        self._values = values
        self._shown = shown or {}

    def _bad(self, key: str, takes: str) -> BadConfig:
        name = self._shown.get(key, f"mux.{key}")
        given = repr(self._values[key])
        if len(given) > 100:  # a slip of thousands of digits: its ends say enough
            given = f"{given[:60]}...{given[-20:]}"
        return BadConfig(f"{name} takes {takes}, not {given}")

    def flag(self, key: str) -> bool:
        value = self._values[key]
        if isinstance(value, bool) or value is None or (isinstance(value, int) and value in (0, 1)):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in (*_YES, *_NO):
            return value.strip().lower() in _YES
        raise self._bad(key, "true or false")

    def number(self, key: str, *, minimum: int, empty: bool = False) -> int:
        """A whole number, at least ``minimum``; ``empty``: unset (None, false) is 0."""
        value = self._values[key]
        if empty and (value is False or _blank(value)):
            return 0
        if isinstance(value, str) and _WHOLE.fullmatch(value.strip()):
            value = int(value)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self._bad(key, f"a whole number, {minimum} or more")
        return value

    def width(self, key: str) -> int | None:
        """How many at once; None (unset) leaves it to fabric-mux."""
        if _blank(self._values[key]):
            return None
        return self.number(key, minimum=1)

    def seconds(self, key: str) -> float | None:
        value = self._values[key]
        if value is False or _blank(value):
            return None
        seconds: float = -1.0
        if isinstance(value, str) and _DECIMAL.fullmatch(value.strip()):
            seconds = float(value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            seconds = value  # inf and nan fail the test below; a huge int too
        if not 0 <= seconds <= MAX_REPLY_SECONDS:
            raise self._bad(
                key, f"a number of seconds, at most {MAX_REPLY_SECONDS} (0 or null: no limit)"
            )
        return float(seconds) or None

    def persist(self, key: str) -> str:
        value = self._values[key]
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, str):
            text = value.strip().lower()
            good = text in (*_YES, *_NO) or _persist_seconds(text) <= MAX_PERSIST
        else:
            good = (
                value is None
                or isinstance(value, bool)
                or (isinstance(value, int) and 0 <= value <= MAX_PERSIST)
            )
        if not good:
            raise self._bad(key, "seconds, a time as ControlPersist takes it (10m), or yes/no")
        return persist_value(value)

    def text(self, key: str) -> str:
        value = self._values[key]
        if not isinstance(value, str) or not value:
            raise self._bad(key, "a program's name or path")
        return value

    def path(self, key: str) -> str | None:
        """A path as text; bytes as the OS would decode them (a name that is not
        UTF-8 keeps its bytes, and is refused where it is used)."""
        value = self._values[key]
        if value is None or value == "":
            return None
        if isinstance(value, bytes):
            path = os.fsdecode(value)
        elif isinstance(value, (str, os.PathLike)):
            path = os.fspath(value)
        else:
            raise self._bad(key, "a path")
        if any(char in path for char in _NOT_IN_PATHS):
            raise self._bad(
                key,
                "a path without a double quote, a line break or a NUL "
                "(ssh's options cannot carry them)",
            )
        return path

    def parsed(self, key: str, parse: Callable[[Any], T]) -> T:
        """``parse``'s reading of the value; its ValueError says what the key takes."""
        try:
            return parse(self._values[key])
        except ValueError as exc:
            raise self._bad(key, str(exc)) from None

    def failed_hosts(self, key: str) -> str | None:
        value = self._values[key]
        if _blank(value):
            return str(default_failed_hosts())
        if value is False or (isinstance(value, str) and value.strip().lower() in _NO):
            return None
        return self.path(key)

    def options(self, key: str) -> tuple[str, ...]:
        """A list of ssh options, or text of one option a line (as an environment
        variable gives them): each as ``ssh -o`` takes it, spaces and all."""
        value = self._values[key]
        takes = 'a list of "Key=value" ssh options'
        if value is None or isinstance(value, str):
            options = ssh_options(value)
        elif isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
            options = ssh_options(value)
        else:
            raise self._bad(key, takes)
        if any(option.lstrip().startswith("-") for option in options):
            # Each goes to ssh after -o: "-oProxyCommand=x" is no option's name.
            raise self._bad(key, f"{takes}, none starting with - (each is given after -o)")
        return options


def _persist_seconds(text: str) -> int:
    """A ControlPersist time (``1h30m``) in seconds; past :data:`MAX_PERSIST` if it
    is not one."""
    total, at = 0, 0
    for match in _TIME.finditer(text):
        if match.start() != at:
            break
        total += int(match.group(1)) * _UNIT[match.group(2).lower()]
        at = match.end()
    return total if at == len(text) and text else MAX_PERSIST + 1
