"""The failed-hosts file: the hosts a parallel run left undone, for ``-H @FILE``.

- It tells of the last parallel run over hosts to end: a run that left hosts
  failed, interrupted, stopped or not started lists them, one a line, each with
  why in a ``#`` comment; a run where every host was ok removes it. So a rerun
  from ``-H @FILE`` that goes well leaves no stale list, and the file never
  mixes the hosts of two runs (of two tasks, maybe).
- Runs that end at once take turns (a lock beside the file); the last to end
  wins, and says so when it replaces or removes a list that another run wrote
  while it ran.
- Its folder is checked as the control folder is: made 0700 if missing, yours,
  writable by nobody else, and every folder above it yours or root's and
  writable by nobody else (a sticky one aside). Otherwise nothing is written and
  one line says why: ``-H @FILE`` reads only what nobody else could have
  written (see :mod:`fabric_mux.hostfiles`).
- Written whole or not at all (a new file renamed over the old), 0600: a
  host's error output may hold what others should not read.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from .controldir import PathRefused, walk
from .hostfiles import others_can_write
from .parallel import HostReport
from .runreport import write_whole
from .screen import visible

__all__ = ["FailedHosts", "failed_hosts_text"]

#: Seconds a run waits for another run's turn at the file.
LOCK_WAIT = 10.0


class _Refused(Exception):
    """Why nothing was written."""


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """What tells one version of the file from another: None if there is none."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino, info.st_mtime_ns


class FailedHosts:
    """The failed-hosts file of one run, noted as the run starts."""

    def __init__(self, path: str) -> None:
        self.path = Path(os.path.expanduser(path)).absolute()
        self._shown = visible(str(self.path))
        #: The file as it was when the run began: what it finds later was written
        #: by another run meanwhile if it differs.
        self._began = _stamp(self.path)

    def conclude(self, reports: Iterable[HostReport], command: Sequence[str]) -> str:
        """Write the run's list, or remove the file if every host was ok; what to
        say of it (whole lines; empty for nothing)."""
        left = [report for report in reports if report.status != "ok"]
        try:
            folder = self._folder(make=bool(left))
            if folder is None:
                return ""  # nothing to list, and no list to remove
            with self._turn(folder):
                return self._write(left, command) if left else self._remove()
        except _Refused as refused:
            return f"fabric-mux: the failed hosts were not listed: {visible(str(refused))}\n"
        except OSError as exc:
            what = "list" if left else "remove"
            return (
                f"fabric-mux: could not {what} the failed hosts in {self._shown}: "
                f"{visible(exc.strerror or str(exc))}\n"
            )

    def _meanwhile(self, now: tuple[int, int, int] | None) -> bool:
        """Whether another run wrote the file while this one ran."""
        return now is not None and now != self._began

    def _write(self, left: list[HostReport], command: Sequence[str]) -> str:
        meanwhile = self._meanwhile(_stamp(self.path))
        write_whole(self.path, failed_hosts_text(left, command))
        note = " (it replaces a list that another run wrote meanwhile)" if meanwhile else ""
        return f"their list: {self._shown}; to run on them again: -H @{self._shown}{note}\n"

    def _remove(self) -> str:
        now = _stamp(self.path)
        if now is None:
            return ""
        os.unlink(self.path)
        whose = "another run's, written meanwhile," if self._meanwhile(now) else "an earlier run's"
        return f"fabric-mux: every host ok: removed {whose} failed-hosts list {self._shown}\n"

    def _folder(self, *, make: bool) -> Path | None:
        """The file's folder, checked (see the module's notes), made if ``make``;
        None if it is not there and not to be made."""
        given = self.path.parent
        try:
            real = walk(given, others_can_write)
            if not os.path.lexists(real):
                if not make:
                    return None
                for part in reversed([real, *real.parents]):
                    if not os.path.lexists(part):
                        with contextlib.suppress(FileExistsError):
                            part.mkdir(mode=0o700)
                if walk(given, others_can_write) != real:
                    raise _Refused(f"{given} changed while it was being made")
        except PathRefused as refused:
            raise _Refused(f"{given} is not safe: {refused.why}") from None
        info = os.lstat(real)
        why = others_can_write(real, info, sticky_ok=False)
        if why is None and info.st_uid != os.geteuid():
            why = f"{real} belongs to {'root' if info.st_uid == 0 else info.st_uid}, not to you"
        if why:
            raise _Refused(f"its folder is not yours alone: {why}, so another user could swap it")
        return real

    @contextlib.contextmanager
    def _turn(self, folder: Path) -> Iterator[None]:
        """This run's turn at the file: other runs that end now wait for it."""
        lock = folder / f".{self.path.name}.lock"
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        fd = os.open(lock, flags, 0o600)
        try:
            deadline = time.monotonic() + LOCK_WAIT
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise _Refused(f"another run held {lock} for {LOCK_WAIT:.0f} s") from None
                    time.sleep(0.05)
            yield
        finally:
            os.close(fd)


def failed_hosts_text(reports: Iterable[HostReport], command: Sequence[str]) -> str:
    """The list: the run it came from, then each host not ok with why."""
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    lines = [
        f"# fabric-mux: hosts to run again ({when})\n",
        f"# left by: {visible(' '.join(command))}\n",
    ]
    for report in reports:
        if report.status == "ok":
            continue
        if report.status == "failed":
            why = f"failed in {report.failed_in}: {report.why}"
        elif report.status == "interrupted":
            why = f"interrupted in {report.failed_in} ({report.interrupted})"
        elif report.status == "stopped":
            why = f"stopped before {', '.join(report.stopped)}"
        else:
            why = "not started"
        # Host names come from a host list; reasons from a server: shown as text.
        lines.append(f"{visible(report.host)}  # {visible(why)}\n")
    return "".join(lines)
