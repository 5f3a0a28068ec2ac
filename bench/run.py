"""``inv bench``: stock Fabric vs fabric-mux vs raw OpenSSH against one throwaway sshd.

Every measurement is a median over interleaved repetitions (each round runs
every variant once, starting with a different one), so drift on a shared
machine hits all variants alike. Logins are counted in the server's log.
Each section is a module of this package (``cold_connect`` is a, ``warm_run``
b...); ``inv bench fleet`` runs :mod:`bench.fleet` instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from . import (
    big_output,
    cold_connect,
    deploy,
    fab_tasks,
    hosts,
    parallel_deploy,
    scale,
    small_transfers,
    threads,
    transfers,
    warm_run,
)
from .common import (
    byte_compile_package,
    light_server,
    no_agent,
    reaping,
    unwinding_on_signals,
)
from .core import DEFAULT_REPEAT, Bench
from .model import Check, Section
from .report import commit, report

__all__ = ["DEFAULT_REPEAT", "RESULTS", "SECTIONS", "run_bench"]

RESULTS = Path(__file__).with_name("results.md")

#: Each section's letter and what runs it.
RUNNERS: dict[str, Callable[[Bench, int], tuple[list[Section], list[Check]]]] = {
    "a": cold_connect.run,
    "b": warm_run.run,
    "c": fab_tasks.run,
    "d": threads.run,
    "e": transfers.run,
    "f": hosts.run,
    "g": small_transfers.run,
    "h": deploy.run,
    "i": big_output.run,
    "j": scale.run,
    "k": parallel_deploy.run,
}
#: Every section's letter.
SECTIONS = "".join(RUNNERS)


def results_file(rtt_ms: float) -> Path:
    """Where a full run's report goes: one file for loopback, one per round trip."""
    return RESULTS if not rtt_ms else RESULTS.with_name(f"results-rtt{rtt_ms:g}ms.md")


def run_bench(repeat: int = DEFAULT_REPEAT, only: str = SECTIONS, rtt_ms: float = 0) -> str:
    """Run the sections named in ``only``; return the Markdown report.

    ``rtt_ms``: reach the server through a relay adding half of it each way.
    A run of every section also writes the report to :func:`results_file`.
    """
    if repeat < 1:
        raise ValueError("repeat must be at least 1")
    if not only or set(only) - set(SECTIONS):
        raise ValueError(f"only takes letters from {SECTIONS!r}, not {only!r}")
    if rtt_ms < 0:
        raise ValueError("rtt must be 0 (loopback) or more")
    byte_compile_package()
    commit()  # the commit measured is the one at the start
    load_before = os.getloadavg()[0]
    with ExitStack() as stack:
        # Entered first, left last: reaps what the clean-ups below ended.
        stack.enter_context(reaping())
        stack.enter_context(unwinding_on_signals())
        stack.enter_context(no_agent())
        server = light_server(stack, latency_ms=rtt_ms / 2 if rtt_ms else None)
        bench = Bench(stack, server, rtt_ms)
        sections: list[Section] = []
        checks: list[Check] = []
        for key, run in RUNNERS.items():
            if key in only:
                found, promised = run(bench, repeat)
                sections += found
                checks += promised
        load = (load_before, os.getloadavg()[0])
        command = "inv bench" + (f" --repeat {repeat}" if repeat != DEFAULT_REPEAT else "")
        command += f" --only {only}" if set(only) != set(SECTIONS) else ""
        command += f" --rtt {rtt_ms:g}" if rtt_ms else ""
        text = report(command, rtt_ms, load, server, sections, checks)
    if set(only) == set(SECTIONS):  # a partial run must not replace the README's figures
        results_file(rtt_ms).write_text(text)
    return text
