"""The control folder: where the sockets live, and who else could reach into it."""

from __future__ import annotations

import errno
import logging
import os
import pwd
import stat
from collections.abc import Callable
from pathlib import Path

from .exceptions import ControlDirUnsafe, ControlDirUnusable
from .peers import user_name
from .places import default_control_dirs

__all__ = [
    "PathRefused",
    "check_ancestors",
    "default_control_dirs",
    "find_control_dir",
    "prepare_control_dir",
    "user_locks",
    "walk",
]

log = logging.getLogger("fabric_mux")

#: Links followed in one path before giving up, as the kernel does (ELOOP).
_MAX_LINKS = 40


def _unsafe_folder(path: Path, info: os.stat_result) -> str | None:
    """Why another user could swap what is under ``path``; None if nobody can.

    As OpenSSH checks the folders above a key file: owned by root or us and
    writable by nobody else, except a sticky folder (``/tmp``), where others
    cannot rename what is ours.
    """
    if info.st_uid not in (0, os.geteuid()):
        return f"{path} belongs to {user_name(info.st_uid)}"
    if info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX:
        mode = stat.S_IMODE(info.st_mode)
        return f"{path} has mode {mode:04o}: others can write to it"
    return None


def _unsafe(folder: Path, why: str) -> ControlDirUnsafe:
    return ControlDirUnsafe(
        f"control_dir {folder} is unsafe: {why}, so they could replace our control "
        "sockets; use a folder whose parents only you (or root) can write"
    )


class PathRefused(Exception):
    """Why :func:`walk` refused a path: ``unsafe``, another user could swap what is
    on it; else it cannot be used (``not_a_folder``: a name above is a file)."""

    def __init__(self, why: str, *, unsafe: bool, not_a_folder: bool = False) -> None:
        super().__init__(why)
        self.why = why
        self.unsafe = unsafe
        self.not_a_folder = not_a_folder


def check_ancestors(folder: Path) -> Path:
    """Refuse a control folder that another user could swap or reach into.

    Walks the path as the kernel does, one name at a time: every folder above
    the control folder must pass :func:`_unsafe_folder`, and every link on the
    way must belong to root or us (a link in a sticky folder can be replaced
    by whoever owns it). Returns the folder with its links resolved, which is
    what to use from then on; the names that do not exist yet are kept as
    given, to be made by us.

    :raises ControlDirUnsafe: naming the first folder or link that fails.
    """
    try:
        return walk(folder, _unsafe_folder)
    except PathRefused as refused:
        if refused.unsafe:
            raise _unsafe(folder, refused.why) from None
        if refused.not_a_folder:
            raise ControlDirUnusable(
                f"control_dir {folder} cannot be made: {refused.why}"
            ) from None
        raise ControlDirUnusable(f"control_dir {folder}: {refused.why}") from None


def walk(path: Path, unsafe_folder: Callable[[Path, os.stat_result], str | None]) -> Path:
    """``path`` with its links resolved, walked as the kernel walks it, one name
    at a time: every folder above its last name must pass ``unsafe_folder`` (None:
    nobody else can swap what is in it), every link on the way must belong to
    root or us. Names that do not exist yet are kept as given.

    :raises PathRefused: naming the first folder or link that fails.
    """
    if not path.is_absolute():
        path = path.absolute()
    pending = list(path.parts[1:])
    current = Path("/")
    links = 0
    why = unsafe_folder(current, os.lstat(current))
    if why:
        raise PathRefused(why, unsafe=True)
    while pending:
        name = pending.pop(0)
        if name in ("", "."):
            continue
        if name == "..":
            current = current.parent
            continue
        here = current / name
        try:
            info = os.lstat(here)
        except FileNotFoundError:
            return current.joinpath(name, *pending)
        except NotADirectoryError:
            raise PathRefused(
                f"{current} is not a folder", unsafe=False, not_a_folder=True
            ) from None
        except OSError as exc:
            raise PathRefused(f"cannot check {here}: {exc.strerror}", unsafe=False) from None
        if stat.S_ISLNK(info.st_mode):
            if info.st_uid not in (0, os.geteuid()):
                raise PathRefused(
                    f"{here} is a link that {user_name(info.st_uid)} owns", unsafe=True
                )
            links += 1
            if links > _MAX_LINKS:
                raise PathRefused("too many links", unsafe=False)
            target = Path(os.readlink(here))
            if target.is_absolute():
                current = Path("/")
                pending = [*target.parts[1:], *pending]
            else:
                pending = [*target.parts, *pending]
            continue
        if pending:  # a folder above the last name
            why = unsafe_folder(here, info)
            if why:
                raise PathRefused(why, unsafe=True)
        current = here
    return current


def _usable_name(folder: Path) -> None:
    """Refuse, before anything is made, a path that ssh's ControlPath cannot carry."""
    text = str(folder)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ControlDirUnusable(
            f"control_dir {text!r} is not valid UTF-8: ssh's ControlPath option cannot "
            "carry it; use a folder with a UTF-8 name"
        ) from None
    if '"' in text or "\n" in text:
        raise ControlDirUnusable(
            f"control_dir {text!r} holds a double quote or a newline, which ssh's "
            "ControlPath option cannot carry; use another folder"
        )


def prepare_control_dir(path: str | os.PathLike[str] | bytes | None) -> Path:
    """The control folder, made private (0700) if missing, checked if present.

    Its parents are checked first (:func:`check_ancestors`); missing ones are
    made 0700, and checked again once made. With no ``path``, the defaults
    are tried in order: an unusable ``$XDG_RUNTIME_DIR`` (one that ``su`` kept
    from another user, say) is skipped with a log line.

    :raises ControlDirUnsafe: when the folder is not ours alone.
    :raises ControlDirUnusable: when it cannot be made or used.
        In both cases nothing is created or written into it.
    """
    if path is not None:
        given = os.fsdecode(path) if isinstance(path, bytes) else os.fspath(path)
        return _prepare(Path(os.path.expanduser(given)).absolute())
    candidates = default_control_dirs()
    for candidate in candidates[:-1]:
        try:
            return _prepare(candidate)
        except (ControlDirUnsafe, ControlDirUnusable) as exc:
            log.info("XDG_RUNTIME_DIR is not usable (%s): using %s", exc, candidates[-1])
    return _prepare(candidates[-1])


def _prepare(folder: Path) -> Path:
    _usable_name(folder)
    real = check_ancestors(folder)
    missing = [real, *real.parents]
    for part in reversed(missing):
        if os.path.lexists(part):
            continue
        try:
            part.mkdir(mode=0o700)
        except FileExistsError:
            pass  # made meanwhile: the check below decides
        except OSError as exc:
            raise _cannot_make(folder, part, exc) from None
    if check_ancestors(real) != real:
        raise _unsafe(folder, f"{real} changed while it was being made")
    _check_private(folder, real)
    return real


def _check_private(folder: Path, real: Path) -> None:
    """The control folder itself: a folder of ours, 0700, writable."""
    info = os.lstat(real)
    if not stat.S_ISDIR(info.st_mode):
        raise ControlDirUnsafe(f"control_dir {folder} is not a folder")
    if info.st_uid != os.geteuid():
        raise ControlDirUnsafe(
            f"control_dir {folder} is owned by {user_name(info.st_uid)}, not by us"
        )
    if info.st_mode & 0o077:
        mode = stat.S_IMODE(info.st_mode)
        raise ControlDirUnsafe(
            f"control_dir {folder} has mode {mode:04o}: others could reach our sessions; "
            "use a folder with mode 0700"
        )
    if not os.access(real, os.W_OK | os.X_OK):
        raise ControlDirUnusable(
            f"control_dir {folder} is not writable: sockets cannot be made there"
        )


def find_control_dir(path: str | os.PathLike[str] | bytes | None) -> Path:
    """The control folder :func:`prepare_control_dir` would use, checked the same
    way, but made of nothing: for commands that only look (``fabric-mux list``).

    A folder that does not exist yet is returned as it would be made.
    """
    if path is not None:
        given = os.fsdecode(path) if isinstance(path, bytes) else os.fspath(path)
        candidates = [Path(os.path.expanduser(given)).absolute()]
    else:
        candidates = default_control_dirs()
    for candidate in candidates:
        try:
            _usable_name(candidate)
            real = check_ancestors(candidate)
            if os.path.lexists(real):
                _check_private(candidate, real)
            return real
        except (ControlDirUnsafe, ControlDirUnusable):
            if candidate is candidates[-1]:
                raise
    raise AssertionError("unreachable")


def _cannot_make(folder: Path, part: Path, exc: OSError) -> ControlDirUnusable:
    why = exc.strerror or str(exc)
    if exc.errno == errno.EROFS:
        why = "the file system is read-only"
    return ControlDirUnusable(
        f"control_dir {folder} cannot be made: {part}: {why}; set mux.control_dir to a "
        "folder you can write"
    )


def user_locks() -> Path:
    """The folder of the locks of starts at the user's own paths: one for every
    fabric-mux process of this account, whatever its control folder, at
    ``~/.ssh/fabric-mux/locks`` (the home the account database names, not
    ``$HOME``, which cron and sudo set otherwise), made private if missing."""
    home = pwd.getpwuid(os.geteuid()).pw_dir
    folder = prepare_control_dir(os.path.join(home, ".ssh", "fabric-mux", "locks"))
    return folder
