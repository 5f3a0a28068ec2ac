"""The control folder: where the sockets live, and who else could reach into it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .exceptions import ControlDirUnsafe
from .peers import user_name

__all__ = ["check_ancestors", "default_control_dir", "prepare_control_dir"]


def default_control_dir() -> Path:
    """``$XDG_RUNTIME_DIR/fabric-mux`` when set, else ``~/.ssh/fabric-mux``."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "fabric-mux"
    return Path.home() / ".ssh" / "fabric-mux"


def _unsafe_folder(path: Path, info: os.stat_result) -> str | None:
    """Why another user could swap what is under ``path``; None if nobody can.

    As OpenSSH checks the folders above a key file: owned by root or us and
    writable by nobody else, except a sticky folder (``/tmp``), where others
    cannot rename what is ours.
    """
    uid = os.geteuid()
    if info.st_uid not in (0, uid):
        return f"{path} belongs to {user_name(info.st_uid)}"
    if info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX:
        mode = stat.S_IMODE(info.st_mode)
        return f"{path} has mode {mode:04o}: others can write to it"
    return None


def check_ancestors(folder: Path) -> None:
    """Refuse a control folder that another user could swap or reach into.

    Every existing folder above it, as written and with links resolved, must
    pass :func:`_unsafe_folder`.

    :raises ControlDirUnsafe: naming the first folder that does not.
    """
    paths = {*folder.parents, *Path(os.path.realpath(folder)).parents}
    for path in sorted(paths, key=lambda p: len(p.parts)):
        try:
            info = os.stat(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise ControlDirUnsafe(
                f"control_dir {folder}: cannot check {path}: {exc.strerror}"
            ) from None
        why = _unsafe_folder(path, info)
        if why:
            raise ControlDirUnsafe(
                f"control_dir {folder} is unsafe: {why}, so they could replace our "
                "control sockets; use a folder whose parents only you (or root) can write"
            )


def prepare_control_dir(path: str | os.PathLike[str] | None) -> Path:
    """Create the control folder (0700) or check that an existing one is private.

    Its parents are checked first (:func:`check_ancestors`); missing ones are
    made 0700.

    :raises ControlDirUnsafe: when the folder is not ours alone; nothing is
        created or written into it then.
    """
    folder = Path(os.path.expanduser(os.fspath(path))) if path else default_control_dir()
    folder = folder.absolute()
    check_ancestors(folder)
    for missing in [*reversed(folder.parents), folder]:
        try:
            missing.mkdir(mode=0o700)
        except FileExistsError:
            pass
    info = os.lstat(folder)
    if not stat.S_ISDIR(info.st_mode):
        raise ControlDirUnsafe(f"control_dir {folder} is not a folder (or is a symlink)")
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
    return folder
