"""A parallel run's JSON report (``--report FILE``): the run as data, for CI and
dashboards; its schema is :data:`SCHEMA`, described in the docs. (The list of
hosts to run again is :mod:`fabric_mux.failedhosts`'.)

Written whole or not at all (a new file renamed over the old), 0600: a host's
error output may hold what others should not read.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import stat
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .parallel import STATUSES, HostReport
from .release import __version__

__all__ = ["SCHEMA", "RunRecord", "report_data", "write_report", "write_whole"]

#: The report's format name and version; a new version only where a field changes.
SCHEMA = "fabric-mux-run/1"


@dataclass
class RunRecord:
    """What a run's report says of the run as a whole."""

    command: Sequence[str]
    started: float
    ended: float = 0.0
    tasks: list[str] = field(default_factory=list)
    #: ``mux.serial`` as given (``["1", "10%"]``); empty for one batch.
    serial: list[str] = field(default_factory=list)
    #: The sizes of the batches the hosts were split into.
    batches: list[int] = field(default_factory=list)
    max_fail: str | None = None
    #: Why the run stopped before its end (its failure budget); empty if it did not.
    stopped: str = ""
    interrupted: bool = False


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def report_data(record: RunRecord, reports: Iterable[HostReport]) -> dict[str, object]:
    """The report as JSON-ready data."""
    hosts = [
        {
            "host": report.host,
            "status": report.status,
            "batch": report.batch or None,
            "seconds": round(report.seconds, 3),
            "failed_task": report.failed_in,
            "exit_code": report.exit_code,
            "reason": report.why or None,
            "stderr_tail": report.stderr_tail or None,
            "skipped": list(report.skipped),
            "not_run": list(report.stopped),
        }
        for report in reports
    ]
    counts = {status: 0 for status in STATUSES}
    for host in hosts:
        counts[str(host["status"])] += 1
    return {
        "schema": SCHEMA,
        "fabric_mux": __version__,
        "command": list(record.command),
        "tasks": record.tasks,
        "started": _when(record.started),
        "ended": _when(record.ended),
        "seconds": round(record.ended - record.started, 3),
        "interrupted": record.interrupted,
        "serial": record.serial,
        "batches": record.batches,
        "max_fail": record.max_fail,
        "stopped": record.stopped or None,
        "counts": counts,
        "hosts": hosts,
    }


def write_report(path: str, record: RunRecord, reports: Iterable[HostReport]) -> Path:
    """Write the JSON report to ``path``; the path written."""
    # ASCII only: a host's name or a server's words may hold bidi or C1 controls,
    # which a terminal or an editor showing the file would act on; JSON's \u
    # escapes keep them as they were, as text.
    text = json.dumps(report_data(record, reports), indent=2, ensure_ascii=True) + "\n"
    if path == "-":  # not standard output: the hosts' output is there
        raise OSError(errno.EINVAL, "give a file's path (the run's output is on standard output)")
    target = Path(os.path.expanduser(path))
    try:
        kind = os.lstat(target).st_mode
    except FileNotFoundError:
        kind = stat.S_IFREG
    # Never through a link: one in a folder others may write (/tmp) would have root's
    # report replace the file it names. Never over a device or a fifo either.
    if stat.S_ISLNK(kind):
        raise OSError(errno.ELOOP, "it is a link: give the path of the file itself")
    if not stat.S_ISREG(kind):
        raise OSError(errno.EEXIST, "it is there and is not a regular file")
    return write_whole(target, text)


def write_whole(target: Path, text: str) -> Path:
    """Write ``text`` to a new 0600 file beside ``target``, then rename it over it."""
    landing = target.with_name(f".{target.name}.{secrets.token_hex(4)}")
    fd = os.open(landing, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(landing, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(landing)
        raise
    return target.absolute()
