"""``inv bench fleet``: ``fabmux -P`` over 32 to 500 hosts behind a slow link, cold
and warm, against OpenSSH's own floor and stock Fabric with a thread a host.

The hosts are :class:`~bench.fleetbase.Fleet`'s: real sshd servers behind relays
adding a 50 ms round trip, each host a distinct route. Every row runs in a process
of its own, as a user would run it; each is measured :data:`~bench.fleetbase.TRIES`
times and the best is kept (the machine is shared). Logins are counted on the
servers' logs.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path

from fabric_mux.master import master_pids

from .common import (
    byte_compile_package,
    console_script,
    memory,
    no_agent,
    reap_orphans,
    reaping,
    scratch,
    stop_masters,
    unwinding_on_signals,
)
from .fleetbase import RTT_MS, SERVERS, TRIES, Fleet, Row, Size, timing
from .report import commit, machine, software

__all__ = ["RESULTS", "SIZES", "run_fleet"]

RESULTS = Path(__file__).with_name("results-fleet.md")
#: Hosts of each run.
SIZES = (32, 128, 500)
#: The OpenSSH builds compared: a label, and the folder whose bin/ and sbin/ hold
#: its ssh and sshd (None: the system's).
OPENSSH: dict[str, str | None] = {"9.2": None, "10.5": "/opt/openssh-10.5"}


def run_fleet(sizes: Sequence[int] = SIZES, openssh: Sequence[str] = tuple(OPENSSH)) -> str:
    """Measure every size with every OpenSSH build named; the Markdown report.

    A run of every size and build also puts it at the top of :data:`RESULTS`.
    """
    unknown = set(openssh) - set(OPENSSH)
    if unknown or not openssh:
        raise ValueError(f"openssh takes {sorted(OPENSSH)}, not {sorted(openssh)}")
    byte_compile_package()
    commit()  # the commit measured is the one at the start
    load = [os.getloadavg()[0]]
    measured: dict[str, list[Size]] = {}
    with ExitStack() as outer:
        outer.enter_context(reaping())
        outer.enter_context(unwinding_on_signals())
        outer.enter_context(no_agent())
        for label in openssh:
            measured[label] = []
            for count in sizes:
                with ExitStack() as stack:
                    measured[label].append(_size(stack, OPENSSH[label], count, label))
                reap_orphans()
                # What is measured so far, should a later size not finish.
                done = {name: sizes for name, sizes in measured.items() if sizes}
                print(
                    _report(done, load * 2, [s.hosts for s in measured[label]], [label]),
                    file=sys.stderr,
                    flush=True,
                )
    load.append(os.getloadavg()[0])
    text = _report(measured, load, sizes, openssh)
    if tuple(sizes) == SIZES and tuple(openssh) == tuple(OPENSSH):
        # On top of the earlier runs, which stay below for comparison.
        earlier = RESULTS.read_text() if RESULTS.exists() else ""
        RESULTS.write_text(text + ("\n" + earlier if earlier else ""))
    return text


def _size(stack: ExitStack, openssh: str | None, count: int, label: str) -> Size:
    print(f"bench fleet: OpenSSH {label}, {count} hosts", file=sys.stderr, flush=True)
    fleet = Fleet(stack, openssh, count)
    fab, fabmux = console_script("fab"), console_script("fabmux")
    cfg = str(fleet.ssh_config)
    hosts = ",".join(fleet.hosts)
    warm_dir = scratch(stack, "fmb-fw-")
    stack.callback(stop_masters, warm_dir)
    rows = {
        "floor": Row("N plain `ssh HOST true` at once: the login floor"),
        "list": Row("`fabmux --list`: Python's start"),
        "alone": Row(
            "OpenSSH alone, the same work: a master a host (`ssh -fNM`), then the two"
            " commands over it (`ssh -S`)"
        ),
        "stock": Row("stock `fab`, a `Connection` a thread (paramiko)"),
        "cold": Row("`fabmux -P -H <N hosts> fleet`, cold"),
        "again": Row(
            "the same, cold again: masters gone, the control folder kept (its `ssh -G` answers)"
        ),
        "warm": Row("the same, warm (every master up)"),
    }
    size = Size(count, rows)
    idle = fleet.processes()  # the servers' own, with no connection

    def sample(key: str, action: Callable[[], float]) -> None:
        fleet.sample(rows[key], action)

    def cold(folder: Path) -> float:
        argv = [fabmux, "-S", cfg, "-H", hosts, "-P", "fleet"]
        return fleet.run(argv, {"FABRIC_MUX_CONTROL_DIR": str(folder)})

    def alone() -> float:
        with ExitStack() as local:
            folder = scratch(local, "fmb-fa-")
            local.callback(stop_masters, folder)
            return fleet.alone(folder)

    def cold_elsewhere() -> float:
        with ExitStack() as local:
            folder = scratch(local, "fmb-fc-")
            local.callback(stop_masters, folder)
            return cold(folder)

    for _ in range(TRIES):
        sample("floor", fleet.floor)
        sample("list", lambda: fleet.run([fabmux, "--list"]))
        sample("alone", alone)
        sample("stock", lambda: fleet.run([fab, "-S", cfg, "stock", "--names", hosts]))
    sample("cold", cold_elsewhere)
    sample("cold", lambda: cold(warm_dir))  # leaves the warm row's masters up
    peak = fleet.peak
    pids = [
        pid for path in warm_dir.iterdir() if path.is_socket() for pid in master_pids(str(path))
    ]
    _, pss = memory(pids)
    size.notes.append(
        f"{len(pids)} masters after a cold run: PSS {pss / 10**6:.0f} MB in all,"
        f" {pss / max(1, len(pids)) / 10**6:.2f} MB a host; the cold `fabmux` process's peak"
        f" RSS {peak / 10**6:.0f} MB, {peak / count / 10**6:.2f} MB a host"
    )
    for _ in range(TRIES):
        # A later day's run: ControlPersist ended every master, the folder stays.
        stop_masters(warm_dir)
        fleet.settle(idle)
        sample("again", lambda: cold(warm_dir))  # the last leaves the warm row's masters up
    for _ in range(TRIES):
        sample("warm", lambda: cold(warm_dir))
    return size


def _report(
    measured: dict[str, list[Size]], load: list[float], sizes: Sequence[int], openssh: Sequence[str]
) -> str:
    lines = [
        f"## fabric-mux fleet benchmark at {commit()}: `fabmux -P` over"
        f" {', '.join(map(str, sizes))} hosts at {RTT_MS} ms",
        "",
        f"- Link: each sshd behind a `LatencyRelay` adding {RTT_MS // 2} ms each way;"
        f" at most {SERVERS} sshd servers, more hosts spread over them, a route each"
        " (its own HostKeyAlias, master and login)",
        "- Task: two `c.run('true', hide=True)` a host",
        f"- Machine: {machine()}",
        f"- Software: {software()}",
        f"- Method: `inv bench fleet`, {time.strftime('%Y-%m-%d %H:%M %Z')}; the best of"
        f" {TRIES} tries a row (logins: the median a try); load average {load[0]:.2f} at the"
        f" start, {load[1]:.2f} at the end",
        "",
    ]
    header = "| | " + " | ".join(f"{n} hosts, OpenSSH {o}" for o in openssh for n in sizes) + " |"
    lines += [header, "| --- |" + " ---: |" * (len(openssh) * len(sizes))]
    flat = [size for label in openssh for size in measured[label]]
    for key in ("floor", "list", "alone", "stock", "cold", "again", "warm"):
        cells = []
        for size in flat:
            row = size.rows[key]
            best = row.best
            text = timing(row)
            if best is None or math.isinf(best):
                pass
            elif key == "alone":
                text += f", {best / (size.rows['floor'].best or 1):.2f}x floor"
            elif key in ("cold", "again"):
                floor = size.rows["floor"].best or 0
                start = size.rows["list"].best or 0
                text += f", {best / (floor + start):.2f}x floor + start"
            elif key == "warm":
                stock = size.rows["stock"].best or 1
                text += f", {best / stock:.2f}x stock"
            cells.append(text)
        lines.append(f"| {flat[0].rows[key].label} | " + " | ".join(cells) + " |")
    lines.append("")
    for label in openssh:
        for size in measured[label]:
            lines += [f"- OpenSSH {label}, {size.hosts} hosts: {note}" for note in size.notes]
    return "\n".join(lines) + "\n"
