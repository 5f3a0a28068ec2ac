"""The user's own masters that fabric-mux has used, linked from the control
folder, so that ``fabric-mux list`` can show them and ``stop --all`` leave them alone."""

from __future__ import annotations

import hashlib
import logging
import os
import socket
from pathlib import Path

from .config import MuxSettings
from .controldir import find_control_dir, prepare_control_dir
from .exceptions import MuxError

__all__ = ["UserMasterLinks", "user_master_links"]

log = logging.getLogger("fabric_mux")


class UserMasterLinks:
    """The user's own sockets that fabric-mux has used, linked from the control
    folder (``user-<hash>``), so that ``fabric-mux list`` can show them and
    ``stop --all`` can leave them alone."""

    PREFIX = "user-"

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def record(self, path: str) -> None:
        try:
            folder = prepare_control_dir(str(self.folder))
        except MuxError:
            return  # a record is a courtesy: the route works without it
        name = self.PREFIX + hashlib.sha256(path.encode()).hexdigest()[:16]
        link = folder / name
        try:
            if os.readlink(link) == path:
                return
            os.unlink(link)
        except OSError:
            pass
        try:
            os.symlink(path, link)
        except OSError as exc:
            log.debug("could not record the user's master %s: %s", path, exc)

    def paths(self) -> dict[Path, str]:
        """Each link and the user's socket path it names."""
        found: dict[Path, str] = {}
        if not self.folder.is_dir():
            return found
        for link in sorted(self.folder.glob(self.PREFIX + "*")):
            try:
                found[link] = os.readlink(link)
            except OSError:
                continue
        return found

    def forget_gone(self) -> None:
        """Remove the links to sockets whose masters ended (the socket gone, or
        nothing listening there: a master killed leaves its socket); one is made
        again if fabric-mux rides a master there later. Their sockets are theirs:
        left as they are."""
        for link, path in self.paths().items():
            if _listening(path):
                continue
            try:
                link.unlink()
            except OSError as exc:
                log.debug("could not remove %s: %s", link, exc)


def _listening(path: str) -> bool:
    """Whether something listens on the UNIX socket ``path`` (or may: a socket
    that cannot be asked, not ours to enter, counts as alive)."""
    if not os.path.lexists(path):
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(2.0)  # a backlog full of a busy master's clients
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            return False
        except OSError:
            return True
    return True


def user_master_links(settings: MuxSettings) -> UserMasterLinks:
    return UserMasterLinks(find_control_dir(settings.control_dir))
