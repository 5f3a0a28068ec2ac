"""OpenSSH's own view of a connection (``ssh -G``), cached only while provably unchanged.

``ssh -G`` takes 7-13 ms; a run over many hosts asks it once per host. Its
answer is reused only while nothing it depended on changed: every file ssh
read (it names them with ``-v``), the folders holding them and the folders of
its ``Include`` patterns (a new file there changes the folder), the default
config files' folders, and the environment. A config that ran a ``Match exec``
command is never cached: the command could answer otherwise next time.

Answers are also kept between runs, in the private control folder
(``ssh-G/``, each file 0600), so that a run whose masters are all up spawns
no ``ssh -G`` at all. Such an answer is keyed on the arguments and the ssh
binary (its path, inode, size and time, and what ``ssh -V`` says), and holds
the stamps of every file and folder ssh read and the environment variables
the config can name (``${NAME}`` in those files, ``HOME``, ``USER``,
``LOGNAME``, ``SSH_AUTH_SOCK``) with the local host name. One whose config ran a
``Match exec``, tests ``localnetwork`` or canonicalizes host names (answers
that depend on something no file records) is never kept.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import stat
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from . import configchanges, early
from .argv import SshTarget, config_query_argv, parse_resolved_config
from .exceptions import BadSshOption, SshNotFound, classify_ssh_failure
from .places import KEPT
from .process import current
from .version import ssh_version

__all__ = ["KEPT", "changed_since", "find_ssh", "forget", "resolve_config"]

log = logging.getLogger("fabric_mux")

# ssh ends its log lines with \r\n.
_READ = re.compile(r"^debug1: Reading configuration data (.+?)\r?$", re.MULTILINE)
_INCLUDE = re.compile(r"^debug1: .* line \d+: include (.+) matched no files\r?$", re.MULTILINE)
_LOCALNETWORK = re.compile(r"^\s*match\b.*\blocalnetwork\b", re.IGNORECASE | re.MULTILINE)
_VARIABLE = re.compile(r"\$\{(\w+)\}")
#: Variables that change an answer without being named in the config.
_ALWAYS_NAMED = ("HOME", "USER", "LOGNAME", "SSH_AUTH_SOCK")
#: An answer asked early is used only if every file ssh read is at least this
#: much older than the question (file times lag the clock by up to a tick).
SETTLED_NS = 1_000_000_000

#: Where ssh looks for configuration when no -F is given, present or not.
_DEFAULT_FILES = ("~/.ssh/config", "/etc/ssh/ssh_config")


def find_ssh(program: str) -> str:
    """The absolute path of the ``ssh`` program, or :class:`SshNotFound`."""
    found = _which(program, os.environ.get("PATH", os.defpath))
    if found is None or not os.access(found, os.X_OK):
        _which.cache_clear()  # it went: look again
        found = _which(program, os.environ.get("PATH", os.defpath))
    if found is None:
        raise SshNotFound(f"no ssh program {program!r} on PATH: install OpenSSH's client")
    return found


@functools.lru_cache(maxsize=16)
def _which(program: str, path: str) -> str | None:
    # Every connection asks; a search of PATH costs a stat a folder.
    return shutil.which(program, path=path)


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
        return self.environment == early.environment() and all(
            _stamp(stamp.path) == stamp for stamp in self.stamps
        )


def _dependencies(stderr: str, target: SshTarget) -> list[str]:
    files = _READ.findall(stderr)
    patterns = _INCLUDE.findall(stderr)
    defaults = [] if target.config_file else [os.path.expanduser(f) for f in _DEFAULT_FILES]
    folders = {os.path.dirname(os.path.abspath(path)) for path in [*files, *defaults]}
    folders |= {os.path.dirname(os.path.expanduser(pattern)) for pattern in patterns}
    return sorted({*files, *defaults, *folders})


def resolve_config(
    ssh: str, target: SshTarget, *, fresh: bool = False, keep_in: Path | None = None
) -> str:
    """``ssh -G``'s output for ``target``: OpenSSH's resolved configuration.

    Reused from an earlier call while everything it depended on is unchanged
    (see the module's rules); ``fresh`` asks ssh again in any case.
    ``keep_in``: the control folder, where answers are kept between runs.

    :raises UnsupportedSsh: ``ssh`` is not OpenSSH, or too old for ``-G``
        (asked once a process).
    """
    ssh_version(ssh)
    argv = config_query_argv(ssh, target)
    key = tuple(argv)
    state = current()
    if not fresh:
        with state.resolved_lock:
            known: _Answer | None = state.resolved.get(key)
        if known is not None and known.still_true():
            return known.text
        text = _load_kept(keep_in, argv) if keep_in is not None else None
        if text is not None:
            early.stop_guessing()  # a run before this one asked them: the rest are kept too
            return text
    environment = early.environment()
    question = [argv[0], "-v", *argv[1:]]  # -v: ssh names what it read
    guessed = _guessed(question, target, environment)
    if guessed is not None:
        text, stderr, stamps = guessed
    else:
        text, stderr = _run(question)
        stamps = tuple(_stamp(path) for path in _dependencies(stderr, target))
    with state.resolved_lock:
        if early.ran_a_command(stderr):
            state.resolved.pop(key, None)
            return text
        state.resolved[key] = _Answer(text, stamps, environment)
    if keep_in is not None:
        _keep(keep_in, argv, text, stamps)
    return text


def _guessed(
    question: Sequence[str], target: SshTarget, environment: tuple[tuple[str, str], ...]
) -> tuple[str, str, tuple[_Stamp, ...]] | None:
    """The answer to ``question`` that was asked early (see :mod:`fabric_mux.early`),
    its output, log and stamps, if it holds now."""
    asked = early.take(question)
    if asked is None or asked.returncode != 0 or asked.environment != environment:
        return None
    if early.ran_a_command(asked.stderr):
        return None  # the command its config ran could answer otherwise now
    stamps = tuple(_stamp(path) for path in _dependencies(asked.stderr, target))
    # A file changed about when ssh read it may have been read in its old version.
    settled = asked.began_ns - SETTLED_NS
    if any(stamp.mtime_ns >= settled for stamp in stamps):
        return None
    log.debug("resolving route: %s (asked early)", list(question))
    return asked.stdout, asked.stderr, stamps


# -- answers kept between runs ----------------------------------------------------


def _kept_path(folder: Path, argv: Sequence[str]) -> tuple[Path, dict[str, Any]]:
    """Where the answer for ``argv`` is kept, and what it is keyed on."""
    binary = _stamp(argv[0])
    key = {"argv": list(argv), "ssh": list(binary), "version": ssh_version(argv[0]).said}
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    return folder / KEPT / f"{name}.json", key


def _named_environment(paths: Sequence[str]) -> dict[str, str | None]:
    """The variables the config files ``paths`` can read, and the local host name."""
    names = set(_ALWAYS_NAMED)
    for path in paths:
        names.update(_facts(_stamp(path)).variables)
    named: dict[str, str | None] = {name: os.environ.get(name) for name in sorted(names)}
    named["(hostname)"] = socket.gethostname()
    named["(uid)"] = str(os.geteuid())
    return named


class _FileFacts(NamedTuple):
    """What a config file says that decides whether and how an answer is kept."""

    #: The ``${NAME}`` variables it names.
    variables: frozenset[str]
    #: Whether a ``Match`` of it tests ``localnetwork``.
    localnetwork: bool


@functools.lru_cache(maxsize=256)
def _facts(file: _Stamp) -> _FileFacts:
    """:class:`_FileFacts` of a config file, by its stamp: read once a version,
    not once a host (a fleet's ssh_config names every host)."""
    text = _read_text(file.path) or ""
    return _FileFacts(frozenset(_VARIABLE.findall(text)), bool(_LOCALNETWORK.search(text)))


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            return file.read()
    except (OSError, ValueError):
        return None


def _private_folder(folder: Path) -> bool:
    """Whether ``folder`` is a real folder of ours that no one else can write to or read."""
    try:
        info = os.lstat(folder)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid() and not info.st_mode & 0o077


def _load_kept(folder: Path, argv: Sequence[str]) -> str | None:
    """A kept answer for ``argv`` that is still true, or None."""
    if not _private_folder(folder) or not _private_folder(folder / KEPT):
        return None
    path, key = _kept_path(folder, argv)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if info.st_uid != os.geteuid() or info.st_mode & 0o077:
            return None
        with os.fdopen(os.dup(fd), encoding="utf-8") as file:
            kept = json.load(file)
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    try:
        if kept["key"] != key:
            return None
        stamps = tuple(_Stamp(*stamp) for stamp in kept["stamps"])
        text = str(kept["text"])
        if any(_stamp(stamp.path) != stamp for stamp in stamps):
            return None
        files = [stamp.path for stamp in stamps if os.path.isfile(stamp.path)]
        if kept["environment"] != _named_environment(files):
            return None
    except (KeyError, TypeError, ValueError):
        return None
    state = current()
    with state.resolved_lock:
        state.resolved[tuple(argv)] = _Answer(text, stamps, early.environment())
    return text


def _keep(folder: Path, argv: Sequence[str], text: str, stamps: Sequence[_Stamp]) -> None:
    """Keep an answer for the next runs, if nothing outside its files decides it."""
    if not _private_folder(folder):
        return
    files = [stamp.path for stamp in stamps if os.path.isfile(stamp.path)]
    if any(_facts(_stamp(path)).localnetwork for path in files):
        return
    view = parse_resolved_config(text)
    if view.get("canonicalizehostname", "false") not in ("false", "no"):
        return
    path, key = _kept_path(folder, argv)
    kept = {
        "key": key,
        "text": text,
        "stamps": [list(stamp) for stamp in stamps],
        "environment": _named_environment(files),
    }
    with contextlib.suppress(OSError):
        os.mkdir(path.parent, 0o700)
    if not _private_folder(path.parent):
        return
    try:
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
    except OSError:
        return
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:  # mkstemp makes it 0600
            file.write(json.dumps(kept))  # dumps: C's encoder, where dump is Python's
        os.replace(temporary, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temporary)


def changed_since(ssh: str, target: SshTarget, since: float) -> bool | None:
    """Whether the config ``ssh -G`` read for ``target`` (asked just before, with
    :func:`resolve_config`) changed after ``since`` (seconds since the epoch), as
    :func:`fabric_mux.configchanges.changed_since` tells; None when that cannot
    be told (its config ran a ``Match exec``, whose answers are never kept)."""
    with current().resolved_lock:
        known: _Answer | None = current().resolved.get(tuple(config_query_argv(ssh, target)))
    if known is None:
        return None
    return configchanges.changed_since([stamp.path for stamp in known.stamps], since)


def forget() -> None:
    """Drop every cached answer."""
    state = current()
    with state.resolved_lock:
        state.resolved.clear()


_VERBOSE = ("debug1:", "OpenSSH_")


def _run(argv: Sequence[str]) -> tuple[str, str]:
    log.debug("resolving route: %s", list(argv))
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, check=False)
    except FileNotFoundError:
        raise SshNotFound(f"no ssh program at {argv[0]}") from None
    stderr = proc.stderr.decode("utf-8", "replace")
    if proc.returncode != 0:
        # What -v added (its debug lines, and the version line some builds print
        # first) is no part of what ssh refused.
        said = "\n".join(line for line in stderr.splitlines() if not line.startswith(_VERBOSE))
        # ssh -G connects nowhere: what it refuses is its configuration.
        raise classify_ssh_failure(argv[-1], argv, proc.returncode, said, otherwise=BadSshOption)
    return proc.stdout.decode("utf-8", "replace"), stderr
