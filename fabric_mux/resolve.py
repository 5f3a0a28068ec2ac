"""OpenSSH's own view of a connection (``ssh -G``), cached only while provably unchanged.

``ssh -G`` takes 7-13 ms; a run over many hosts asks it once per host. Its
answer is reused only while nothing it depended on changed: every file ssh
read (it names them with ``-v``), the folders holding them and the folders of
its ``Include`` patterns (a new file there changes the folder), the default
config files' folders, and the environment. A config that ran a ``Match exec``
command is never cached: the command could answer otherwise next time.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from typing import NamedTuple

from .argv import SshTarget, config_query_argv
from .exceptions import SshNotFound, classify_ssh_failure
from .process import current

__all__ = ["find_ssh", "forget", "resolve_config"]

log = logging.getLogger("fabric_mux")

# ssh ends its log lines with \r\n.
_READ = re.compile(r"^debug1: Reading configuration data (.+?)\r?$", re.MULTILINE)
_INCLUDE = re.compile(r"^debug1: .* line \d+: include (.+) matched no files\r?$", re.MULTILINE)
_EXEC = re.compile(r"^debug1: Executing command", re.MULTILINE)

#: Where ssh looks for configuration when no -F is given, present or not.
_DEFAULT_FILES = ("~/.ssh/config", "/etc/ssh/ssh_config")


def find_ssh(program: str) -> str:
    """The absolute path of the ``ssh`` program, or :class:`SshNotFound`."""
    found = shutil.which(program)
    if found is None:
        raise SshNotFound(f"no ssh program {program!r} on PATH: install OpenSSH's client")
    return found


class _Stamp(NamedTuple):
    """What changes when a file or folder changes (or appears, or goes)."""

    path: str
    inode: int
    size: int
    mtime_ns: int


def _stamp(path: str) -> _Stamp:
    try:
        info = os.stat(path)
    except OSError:
        return _Stamp(path, -1, -1, -1)
    return _Stamp(path, info.st_ino, info.st_size, info.st_mtime_ns)


class _Answer(NamedTuple):
    text: str
    stamps: tuple[_Stamp, ...]
    environment: tuple[tuple[str, str], ...]

    def still_true(self) -> bool:
        return self.environment == _environment() and all(
            _stamp(stamp.path) == stamp for stamp in self.stamps
        )


def _environment() -> tuple[tuple[str, str], ...]:
    # Options may name ${VARIABLES}; HOME and USER decide ~ and the defaults.
    return tuple(sorted(os.environ.items()))


def _dependencies(stderr: str, target: SshTarget) -> list[str]:
    files = _READ.findall(stderr)
    patterns = _INCLUDE.findall(stderr)
    defaults = [] if target.config_file else [os.path.expanduser(f) for f in _DEFAULT_FILES]
    folders = {os.path.dirname(os.path.abspath(path)) for path in [*files, *defaults]}
    folders |= {os.path.dirname(os.path.expanduser(pattern)) for pattern in patterns}
    return sorted({*files, *defaults, *folders})


def resolve_config(ssh: str, target: SshTarget, *, fresh: bool = False) -> str:
    """``ssh -G``'s output for ``target``: OpenSSH's resolved configuration.

    Reused from an earlier call while everything it depended on is unchanged
    (see the module's rules); ``fresh`` asks ssh again in any case.
    """
    argv = config_query_argv(ssh, target)
    key = tuple(argv)
    state = current()
    if not fresh:
        with state.resolved_lock:
            known: _Answer | None = state.resolved.get(key)
        if known is not None and known.still_true():
            return known.text
    environment = _environment()
    text, stderr = _run([argv[0], "-v", *argv[1:]])  # -v: ssh names what it read
    with state.resolved_lock:
        if _EXEC.search(stderr):
            state.resolved.pop(key, None)
        else:
            stamps = tuple(_stamp(path) for path in _dependencies(stderr, target))
            state.resolved[key] = _Answer(text, stamps, environment)
    return text


def forget() -> None:
    """Drop every cached answer."""
    state = current()
    with state.resolved_lock:
        state.resolved.clear()


def _run(argv: Sequence[str]) -> tuple[str, str]:
    log.debug("resolving route: %s", list(argv))
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, check=False)
    except FileNotFoundError:
        raise SshNotFound(f"no ssh program at {argv[0]}") from None
    stderr = proc.stderr.decode("utf-8", "replace")
    if proc.returncode != 0:
        said = "\n".join(line for line in stderr.splitlines() if not line.startswith("debug1:"))
        raise classify_ssh_failure(argv[-1], argv, proc.returncode, said)
    return proc.stdout.decode("utf-8", "replace"), stderr
