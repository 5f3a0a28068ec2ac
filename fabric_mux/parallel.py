"""Parallel runs over a fleet (``fabmux -P``): each task on every host at once, tasks
in order, every output line carrying its host, a summary at the end.

A task runs on all hosts of the run together (at most ``mux.pool_size`` at a
time, if set); the next task starts when every host has finished this one, as
Fabric 1's ``-P`` did. On a terminal, a progress line (hosts done, failed,
running, time so far) stays at the bottom of stderr. A host that fails is left
out of the tasks after, and the others go on. Masters make this cheap: every
host logs in once, a bastion once for all of them.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from invoke.exceptions import UnexpectedExit

from .hostlist import fold
from .process import current
from .screen import visible

__all__ = ["STATUSES", "HostReport", "Terminated", "Wave", "interruption", "summary"]

#: A host's outcomes, in the summary's order.
STATUSES = ("ok", "failed", "interrupted", "stopped", "not started")


@dataclass
class HostReport:
    """How one host fared over a parallel run."""

    host: str
    seconds: float = 0.0
    #: The task it failed in, and the first line of why; None while it is fine.
    failed_in: str | None = None
    why: str = ""
    #: Tasks it did not run, after failing.
    skipped: list[str] = field(default_factory=list)
    #: The batch it ran in (1 for the first); 0: it never started.
    batch: int = 0
    #: The exit code of the command it failed on, if a command failed.
    exit_code: int | None = None
    #: The end of what that command wrote to stderr (or the failure's own words).
    stderr_tail: str = ""
    #: Tasks it did not run because the run stopped (its failure budget spent).
    stopped: list[str] = field(default_factory=list)
    #: What interrupted its task (``Ctrl-C``, ``SIGTERM``), running or not yet
    #: started; empty if nothing did.
    interrupted: str = ""

    @property
    def ok(self) -> bool:
        return self.failed_in is None

    @property
    def status(self) -> str:
        """``ok``, ``failed``, ``interrupted`` (its task was running, or waiting to
        start, when the run was interrupted), ``stopped`` (ok, but the run stopped
        before its last task) or ``not started``."""
        if self.interrupted:
            return "interrupted"
        if not self.ok:
            return "failed"
        if not self.batch:
            return "not started"
        return "stopped" if self.stopped else "ok"


class Wave:
    """One task over many hosts at once; reports kept across waves by host."""

    def __init__(
        self,
        task: str,
        hosts: Sequence[str],
        pool_size: int,
        reports: dict[str, HostReport],
        progress: IO[str] | None = None,
        label: str | None = None,
    ) -> None:
        self.task = task
        #: What the progress line calls it (a rolling run: the task and its batch).
        self.label = label or task
        self.hosts = list(hosts)
        self.pool_size = max(1, pool_size)
        self.reports = reports
        self.progress = progress or sys.stderr
        self._lock = threading.Lock()
        self._done = 0
        self._failed = 0
        self._running: set[str] = set()
        self._began = time.monotonic()

    def run(
        self,
        work: Callable[[str], Any],
        on_interrupt: Callable[[list[str]], object] | None = None,
    ) -> dict[str, Any]:
        """Run ``work(host)`` for each host not yet failed; their results by host.

        ``on_interrupt(running hosts)`` is called on Ctrl-C: it should make the
        workers stop (their next command fails). Ctrl-C returns at once: the
        workers are daemon threads, so a task busy with local work does not
        keep the process alive.
        """
        results: dict[str, Any] = {}
        #: Hosts whose outcome Ctrl-C decided: their workers, still running, leave
        #: their reports alone (the summary, the list and the report agree).
        decided: set[str] = set()
        began: dict[str, float] = {}
        todo = []
        for host in self.hosts:
            report = self.reports.setdefault(host, HostReport(host))
            if report.ok:
                todo.append(host)
            else:
                report.skipped.append(self.task)
        waiting = list(reversed(todo))  # popped from the end: in order
        all_done = threading.Event()
        left = len(todo)
        #: What a worker met that is not a host's failure (SystemExit...): raised here.
        escaped: list[BaseException] = []
        stopping = False

        def one(host: str) -> None:
            self._show()
            try:
                result = work(host)
            except BaseException as exc:  # the host's own failure; the others go on
                with self._lock:
                    if host not in decided:
                        report = self.reports[host]
                        report.failed_in = self.task
                        report.why = _reason(exc)
                        report.exit_code, report.stderr_tail = _details(exc)
                        self._failed += 1
                if not isinstance(exc, Exception):
                    escaped.append(exc)
            else:
                with self._lock:
                    if host not in decided:
                        results[host] = result
            finally:
                with self._lock:
                    if host not in decided:
                        self.reports[host].seconds += time.monotonic() - began[host]
                    self._running.discard(host)
                    self._done += 1
                self._show()

        def worker() -> None:
            nonlocal left
            while True:
                with self._lock:
                    if stopping or not waiting:
                        return
                    # Taken and running at once: Ctrl-C finds each host in one place.
                    host = waiting.pop()
                    self._running.add(host)
                    began[host] = time.monotonic()
                try:
                    one(host)
                finally:
                    with self._lock:
                        left -= 1
                        if not left:
                            all_done.set()

        self._began = time.monotonic()
        try:
            for number in range(min(self.pool_size, len(todo))):
                name = f"fabric-mux {self.task} {number + 1}"
                threading.Thread(target=worker, name=name, daemon=True).start()
            # Woken each second to keep the progress line's clock going.
            while todo and not all_done.wait(1.0):
                self._show()
        except KeyboardInterrupt as exc:
            with self._lock:
                stopping = True  # no host starts after this
                # Decided now, before anything is written: the hosts still at
                # work, and those yet to start, were interrupted in this task.
                now = time.monotonic()
                for host in [*self._running, *waiting]:
                    report = self.reports[host]
                    report.failed_in, report.interrupted = self.task, interruption(exc)
                    report.why = f"interrupted ({report.interrupted})"
                    report.exit_code, report.stderr_tail = None, ""
                    report.seconds += now - began.get(host, now)
                    decided.add(host)
            current().screen.end_status()
            if on_interrupt is not None:
                on_interrupt(self.running())
            raise
        finally:
            current().screen.end_status()
        if escaped:
            raise escaped[0]
        return results

    def running(self) -> list[str]:
        with self._lock:
            return sorted(self._running)

    def _show(self) -> None:
        with self._lock:
            text = (
                f"{self.label}: {self._done}/{len(self.hosts)} hosts done, "
                f"{self._failed} failed, {len(self._running)} running, "
                f"{time.monotonic() - self._began:.0f} s"
            )
        current().screen.show_status(visible(text), self.progress)


class Terminated(KeyboardInterrupt):
    """A parallel run ended by a signal (SIGTERM): handled as Ctrl-C is, and named."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name


def interruption(exc: BaseException) -> str:
    """What interrupted a run: ``Ctrl-C``, or the signal that ended it."""
    return exc.signal_name if isinstance(exc, Terminated) else "Ctrl-C"


def _reason(exc: BaseException) -> str:
    """Why a host failed, in one line: a failed command says which, and its exit code."""
    if isinstance(exc, UnexpectedExit):
        result = exc.result
        return f"{type(exc).__name__}: {result.command!r} exited with {result.exited}"[:200]
    text = str(exc).strip() or type(exc).__name__
    for line in text.splitlines():
        if line.strip():
            return f"{type(exc).__name__}: {line.strip()}"[:200]
    return type(exc).__name__


#: How much of a failed command's stderr a report keeps.
STDERR_TAIL = 4096


def _details(exc: BaseException) -> tuple[int | None, str]:
    """A failure's exit code (a failed command's) and the end of its stderr (else
    of its message)."""
    if isinstance(exc, UnexpectedExit):
        return exc.result.exited, (exc.result.stderr or "")[-STDERR_TAIL:]
    return None, (str(exc) or type(exc).__name__)[-STDERR_TAIL:]


def summary(
    reports: Mapping[str, HostReport],
    tasks: Sequence[str],
    batches: Sequence[int] = (),
    stopped: str = "",
) -> str:
    """The run's last word: the hosts of each outcome, folded (``web[01-38,40]``),
    and how many failed. ``batches``: the sizes of a rolling run's batches;
    ``stopped``: why the run stopped early.

    Host names and reasons come from elsewhere (a host file, a server's error
    text): every line is shown as text (:func:`~fabric_mux.screen.visible`), so
    that none can move the cursor over another host's line.
    """
    if not reports:
        return ""
    how = "in parallel"
    if len(batches) > 1:
        how += f", in {len(batches)} batches ({', '.join(map(str, batches))})"
    lines = [f"fabric-mux: {', '.join(tasks)} on {len(reports)} hosts {how}"]
    groups: dict[tuple[str, str], list[str]] = {}
    for report in reports.values():
        if report.status == "failed":
            detail = f"in {report.failed_in}: {report.why}"
            if report.skipped:
                detail += f" (then skipped {', '.join(report.skipped)})"
        elif report.status == "interrupted":
            detail = f"in {report.failed_in} ({report.interrupted})"
        elif report.status == "stopped":
            detail = f"did not run {', '.join(report.stopped)}"
        else:
            detail = ""
        groups.setdefault((report.status, detail), []).append(report.host)
    order = STATUSES
    for (status, detail), hosts in sorted(groups.items(), key=lambda item: order.index(item[0][0])):
        line = f"  {status:<12} {fold(hosts)} ({len(hosts)})"
        lines.append(f"{line}  {detail}" if detail else line)
    if stopped:
        lines.append(stopped)
    counts = Counter(report.status for report in reports.values())
    if counts["ok"] == len(reports):
        lines.append("every host ok")
    else:
        said = [f"{counts['failed']} of {len(reports)} hosts failed"]
        said += [f"{counts[status]} {status}" for status in STATUSES[2:] if counts[status]]
        lines.append(", ".join(said))
    return "".join(f"{visible(line)}\n" for line in lines)
