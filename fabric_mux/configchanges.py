"""Whether the ssh_config a running master read may differ from what ``ssh -G``
reads now: the check before a user's master is ridden (see :mod:`fabric_mux.served`).

The master read its files when it started; only what changed since tells. A
config file written, replaced or made since (its modification time, or its
change time, which ``cp -p`` or ``touch -d`` cannot set back), a link on the way
to one re-pointed (an ``Include`` of a link, a dotfiles folder switched), and a
folder whose files an ``Include`` takes by a pattern, or names and finds no
more (a file of it removed or added). Not the folder of every file read: the
user's ControlPath sockets come and go beside ``~/.ssh/config``, and a new
socket is not a new config. (A folder that holds both sockets and a pattern's
files counts whole: a master not ridden is the safe way to be wrong.)
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import stat
from collections.abc import Iterable, Sequence

__all__ = ["changed_since"]

_INCLUDE = re.compile(r"^[ \t]*include(?:[ \t]*=[ \t]*|[ \t]+)(.+?)[ \t]*$", re.I | re.M)
_WILDCARD = re.compile(r"[*?\[]")
_COMMENT = re.compile(r"(?:^|\s)#.*$")


def changed_since(files: Sequence[str], since: float) -> bool:
    """Whether any of the config ``files`` that ``ssh -G`` read (as it named
    them), the links on their way, or the folders of their ``Include``
    patterns changed after ``since`` (seconds since the epoch)."""
    after = since * 1e9
    read = [path for path in files if os.path.isfile(path)]
    watched = _include_folders(read)
    if any(_changed(path, after, regular=True) for path in read):
        return True
    if any(_changed(_nearest(folder), after, regular=False) for folder in watched):
        return True
    return any(_link_on_way_changed(path, after) for path in [*read, *watched])


def _nearest(folder: str) -> str:
    """``folder``, or the nearest folder above it that is there: a folder removed
    since changed the one that held it."""
    here = os.path.realpath(folder)  # sel/.. is the parent of where sel leads
    while not os.path.isdir(here) and os.path.dirname(here) != here:
        here = os.path.dirname(here)
    return here


def _changed(path: str, after: float, *, regular: bool) -> bool:
    try:
        info = os.stat(path)
    except OSError:
        return False
    if regular and not stat.S_ISREG(info.st_mode):
        return False
    return max(info.st_mtime_ns, info.st_ctime_ns) > after


def _link_on_way_changed(path: str, after: float) -> bool:
    """Whether a symbolic link that the kernel meets on its way to ``path`` was
    made (or re-pointed, which makes it anew) after ``after`` (ns): each folder of
    the path, and each link's own target in turn, as the kernel resolves them
    (``..`` after a link is the link's target's parent)."""
    # Not abspath: it would take sel/.. away as text, where the kernel follows sel.
    pending = os.path.join(os.getcwd(), path).split("/")[1:]
    here = "/"
    for _ in range(_MOST_STEPS):
        if not pending:
            return False
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            here = os.path.dirname(here)
            continue
        step = os.path.join(here, part)
        try:
            info = os.lstat(step)
        except OSError:
            here = step  # not there now: what is beyond it is as written
            continue
        if not stat.S_ISLNK(info.st_mode):
            here = step
            continue
        if max(info.st_mtime_ns, info.st_ctime_ns) > after:
            return True
        try:
            target = os.readlink(step)
        except OSError:
            return False
        if target.startswith("/"):
            here = "/"
        pending = target.split("/") + pending
    return True  # a loop of links: nothing to trust


#: Steps of a path walked at most (each part, each link's parts): a loop ends there.
_MOST_STEPS = 4096


def _include_folders(files: Iterable[str]) -> set[str]:
    """The folders an ``Include`` of ``files`` takes files from by a pattern, or
    names a file in that is not there now (it may have been when the master
    started). A relative pattern is in ``~/.ssh``, or ``/etc/ssh`` for the
    system's file, as ssh reads it; one with words ssh expands (``${VAR}``,
    ``%``) counts its file's own folder too."""
    folders: set[str] = set()
    for path in files:
        base = "/etc/ssh" if path.startswith("/etc/ssh/") else os.path.expanduser("~/.ssh")
        for pattern in _patterns(path):
            if "$" in pattern or "%" in pattern:
                folders.add(os.path.dirname(os.path.abspath(path)))
            full = os.path.join(base, os.path.expanduser(pattern))
            if _WILDCARD.search(full):
                folders.add(_fixed_part(full))
            elif not os.path.lexists(full):
                folders.add(os.path.dirname(full))
    return folders


def _fixed_part(pattern: str) -> str:
    """The folder a wildcard pattern's files are in, up to its first wildcard."""
    parts = pattern.split("/")
    fixed = []
    for part in parts[:-1]:
        if _WILDCARD.search(part):
            break
        fixed.append(part)
    return "/".join(fixed) or "/"


def _patterns(path: str) -> list[str]:
    """The patterns of every ``Include`` line of the config file ``path``."""
    try:
        info = os.stat(path)
    except OSError:
        return []
    return list(_patterns_of(path, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns))


@functools.lru_cache(maxsize=256)
def _patterns_of(path: str, *version: int) -> tuple[str, ...]:
    """:func:`_patterns`, read once a version of the file (``version``: its stat)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            text = file.read()
    except OSError:
        return ()
    found: list[str] = []
    for line in _INCLUDE.findall(text):
        words = _COMMENT.sub("", line)  # a # that begins a word, as ssh reads it
        try:
            found.extend(shlex.split(words))
        except ValueError:
            found.extend(words.split())
    return tuple(found)
