"""A parallel run over a fleet (``fabmux -P``), task by task and batch by batch.

The hosts of the run are split into batches (``mux.serial``; one batch of all
of them otherwise). A batch runs every task in order, each task on all of the
batch's hosts at once (:class:`~fabric_mux.parallel.Wave`); while it works, the
masters of the next batch start, so that batch finds them up. After each task
the failure budget (``mux.max_fail``, see :mod:`fabric_mux.rollout`) is
checked: once spent, no task and no batch starts any more, and the masters
started ahead for hosts that never ran are stopped (logins of theirs still under
way ended, not waited for). Ctrl-C (or SIGTERM) does the same, after deciding
every host's outcome at once: ``interrupted`` in the task under way (running or
waiting its turn), ``stopped`` for the batch's others, ``not started`` after.

A call with no host (a pre- or post-task of ``fab``) runs once: before the
batches if it comes before the first task of hosts, after them if it comes
after the last (unless the run was stopped), else in the first batch's turn.

At the end: the summary on stderr; the hosts left undone in the failed-hosts
file, or no file if none was (``-H @FILE`` reruns exactly them: see
:mod:`fabric_mux.failedhosts`); the JSON report (:mod:`fabric_mux.runreport`).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .config import MuxSettings
from .exceptions import BadConfig
from .failedhosts import FailedHosts
from .gather import Gathered
from .parallel import HostReport, Wave, interruption, summary
from .rollout import Budget, batched
from .runreport import RunRecord, write_report
from .screen import visible

__all__ = ["FleetRun"]

#: Runs one host's call (with its output prefix and sink): what a task returns.
CallRunner = Callable[[Any, "str | None", Any], Any]


class FleetRun:
    """One parallel run: its waves (a task over its hosts, or a hostless call),
    run batch by batch within its budget."""

    def __init__(
        self,
        waves: Sequence[list[Any]],
        settings: MuxSettings,
        *,
        label: Callable[[Any], str],
        run_call: CallRunner,
        prepare: Callable[[Any], None],
        prefetch: Callable[[Sequence[Any]], Callable[[], None]],
        on_interrupt: Callable[[list[str]], object],
        width: int,
    ) -> None:
        self.waves = list(waves)
        self.settings = settings
        self._label = label
        self._run_call = run_call
        self._prepare = prepare
        self._prefetch = prefetch
        self._on_interrupt = on_interrupt
        self._width = width
        #: The run's hosts, in the order the run names them, each with its calls.
        self.hosts: dict[str, list[Any]] = {}
        for wave in self.waves:
            for call in wave:
                if self._has_host(call):
                    self.hosts.setdefault(label(call), []).append(call)
        self.batches = batched(list(self.hosts), settings.serial)
        self.budget: Budget | None = settings.max_fail
        if self.budget is None and settings.serial:
            self.budget = Budget(0)  # a canary's failure stops the rollout
        self.reports = {host: HostReport(host) for host in self.hosts}
        #: The names of the tasks run on hosts, in order.
        self.tasks = list(
            dict.fromkeys(_name(wave[0]) for wave in self.waves if self._is_hosts(wave))
        )
        self.results: dict[Any, Any] = {}
        #: Why the run stopped before its end; empty if it did not.
        self.stopped = ""
        self._host_waves = [index for index, wave in enumerate(self.waves) if self._is_hosts(wave)]
        #: Where the run is: its batch, and the last wave of hosts begun in it
        #: (None: none yet), for Ctrl-C to tell what each host did not run.
        self._batch: list[str] = []
        self._wave: int | None = None
        #: Stops the masters started ahead for the next batch (see ``prefetch``).
        self._cancel_ahead: Callable[[], None] = lambda: None
        self._told_interrupt = False
        #: The failed-hosts file, as it was when the run began (see its module).
        where = settings.failed_hosts
        self._failed_hosts = FailedHosts(where) if where is not None else None
        report = settings.report
        if report and self._failed_hosts is not None:
            if Path(os.path.expanduser(report)).absolute() == self._failed_hosts.path:
                raise BadConfig(
                    f"mux.report (--report) names the failed-hosts file {visible(report)}: "
                    "the report would take its place; give the report another path"
                )

    @staticmethod
    def _has_host(call: Any) -> bool:
        return hasattr(call, "init_kwargs")

    def _is_hosts(self, wave: list[Any]) -> bool:
        return self._has_host(wave[0])

    # -- the run ---------------------------------------------------------------

    def run(self, command: Sequence[str]) -> bool:
        """Run it all; whether every host is ok. The summary, the failed-hosts
        file and the report are written whatever way it ends."""
        record = RunRecord(command, time.time())
        try:
            self._run_batches()
        except KeyboardInterrupt as exc:
            record.interrupted = True
            self._interrupted(exc)
            raise
        finally:
            record.ended = time.time()
            written = self._conclude(record)
        # A report asked for and not written fails the run: CI would read none.
        return written and all(report.status == "ok" for report in self.reports.values())

    def _run_batches(self) -> None:
        if not self._host_waves:
            # Only calls with no host (`fab release` with no -H): each runs once.
            for wave in self.waves:
                self._hostless(wave)
            return
        first_hosts, last_hosts = self._host_waves[0], self._host_waves[-1]
        for index in range(first_hosts):
            self._hostless(self.waves[index])
        for number, batch in enumerate(self.batches, start=1):
            ahead = self.batches[number] if number < len(self.batches) else []
            self._batch, self._wave = batch, None
            self._cancel_ahead = self._prefetch([self.hosts[host][0] for host in ahead])
            for host in batch:
                self.reports[host].batch = number
            for index in range(first_hosts, last_hosts + 1):
                wave = self.waves[index]
                if not self._is_hosts(wave):
                    if number == 1:
                        self._hostless(wave)
                    continue
                self._wave = index
                self._task(wave, batch, number)
                if self._spent():
                    self._stop(batch, index, last_hosts)
                    self._cancel_ahead()
                    return
        self._batch = []
        for index in range(last_hosts + 1, len(self.waves)):
            self._hostless(self.waves[index])

    def _hostless(self, wave: list[Any]) -> None:
        call = wave[0]
        self._prepare(call)
        self.results[call.task] = self._run_call(call, None, None)

    def _task(self, wave: list[Any], batch: Sequence[str], number: int) -> None:
        """One task on the batch's hosts at once."""
        first = wave[0]
        self._prepare(first)
        name = _name(first)
        by_host = {self._label(call): call for call in wave if self._label(call) in batch}
        if not by_host:
            return
        gathered = Gathered() if self.settings.gather else None
        prefix = "" if gathered else ("[{}] " if self.settings.prefix else None)

        def work(host: str) -> Any:
            sink = gathered.host(host) if gathered else None
            shown = prefix.format(host) if prefix else prefix
            return self._run_call(by_host[host], shown, sink)

        shown = name if len(self.batches) < 2 else f"{name} (batch {number} of {len(self.batches)})"
        wave_run = Wave(name, list(by_host), self._width, self.reports, label=shown)
        try:
            self.results[first.task] = wave_run.run(work, on_interrupt=self._tell_interrupt)
        finally:
            if gathered is not None:
                gathered.show(sys.stdout, sys.stderr, list(by_host))

    # -- Ctrl-C ----------------------------------------------------------------

    def _tell_interrupt(self, running: list[str]) -> None:
        self._told_interrupt = True
        self._on_interrupt(running)

    def _interrupted(self, exc: KeyboardInterrupt) -> None:
        """Ctrl-C (or SIGTERM): every host's outcome decided before anything is
        written, and what was started ahead for the next batch stopped.

        The hosts of a task under way are the wave's (:meth:`Wave.run`); the
        batch's other hosts did not run its later tasks, or, before its first
        task began, anything at all; later batches never started.
        """
        if not self._told_interrupt:  # it came between waves: no wave told the run
            self._tell_interrupt([])
        last = self._host_waves[-1] if self._host_waves else -1
        later = [] if self._wave is None else self._names_after(self._wave, last)
        for host in self._batch:
            report = self.reports[host]
            if self._wave is None:
                report.batch = 0
            elif report.ok and later:
                report.stopped.extend(later)
        self.stopped = f"the run was interrupted ({interruption(exc)})"
        self._cancel_ahead()

    def _names_after(self, index: int, last_hosts: int) -> list[str]:
        """The tasks of hosts after wave ``index``, up to ``last_hosts``."""
        return [
            _name(self.waves[after][0])
            for after in range(index + 1, last_hosts + 1)
            if self._is_hosts(self.waves[after])
        ]

    # -- the budget ------------------------------------------------------------

    def _spent(self) -> bool:
        if self.budget is None:
            return False
        started = [report for report in self.reports.values() if report.batch]
        failed = sum(1 for report in started if not report.ok)
        return self.budget.exceeded(failed, len(started))

    def _stop(self, batch: Sequence[str], index: int, last_hosts: int) -> None:
        """The budget is spent after wave ``index``: what the batch's hosts did not
        run is noted, and the run's reason said."""
        later = self._names_after(index, last_hosts)
        for host in batch:
            report = self.reports[host]
            if report.ok and later:
                report.stopped.extend(later)
        started = [report for report in self.reports.values() if report.batch]
        failed = sum(1 for report in started if not report.ok)
        assert self.budget is not None
        budget = f"{self.budget}" + (
            "" if self.budget.percent else f" host{'s' * (self.budget.number != 1)}"
        )
        self.stopped = (
            f"the run stopped: {failed} of {len(started)} hosts started failed, "
            f"more than its failure budget ({budget})"
        )

    # -- the end ---------------------------------------------------------------

    def _conclude(self, record: RunRecord) -> bool:
        """Say how the run went, and write its report if asked; False if that failed."""
        sizes = [len(batch) for batch in self.batches]
        said = summary(self.reports, self.tasks, sizes, self.stopped)
        if self._failed_hosts is not None and self.reports:
            said += self._failed_hosts.conclude(self.reports.values(), record.command)
        if said:
            sys.stderr.write(said)
            sys.stderr.flush()
        if self.settings.report:
            record.tasks = list(self.tasks)
            record.batches = sizes
            record.serial = [str(size) for size in self.settings.serial or ()]
            record.max_fail = str(self.budget) if self.budget is not None else None
            record.stopped = self.stopped
            try:
                write_report(self.settings.report, record, self.reports.values())
            except OSError as exc:  # its words, not the name of the file it was to land in
                why = exc.strerror or type(exc).__name__
                sys.stderr.write(
                    visible(f"fabric-mux: could not write the report {self.settings.report}: {why}")
                    + "\n"
                )
                return False
        return True


def _name(call: Any) -> str:
    """A task as the command line called it."""
    name: str = call.called_as or call.task.name
    return name
