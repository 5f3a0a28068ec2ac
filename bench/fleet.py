"""``inv bench fleet``: ``fabmux -P`` over 32 to 500 hosts behind a slow link, cold
and warm, against OpenSSH's own floor and stock Fabric with a thread a host.

Up to :data:`SERVERS` real sshd servers, each behind a
:class:`~fabric_mux.relay.LatencyRelay` adding a 50 ms round trip. A run of N
hosts spreads N aliases over them, each a distinct route (its own
``HostKeyAlias``): its own master and its own login, as distinct hosts would
have. Every row runs in a process of its own, as a user would run it; each is
measured :data:`TRIES` times and the best is kept (the machine is shared).
Logins are counted on the servers' logs.
"""

from __future__ import annotations

import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from fabric_mux.master import master_pids
from fabric_mux.testing import ssh_server

from .common import (
    byte_compile_package,
    clean_env,
    console_script,
    memory,
    no_agent,
    reap_orphans,
    reaping,
    remote_user,
    scratch,
    stop_masters,
    unwinding_on_signals,
)
from .report import commit, machine, software

__all__ = ["RESULTS", "SIZES", "run_fleet"]

RESULTS = Path(__file__).with_name("results-fleet.md")
#: Hosts of each run.
SIZES = (32, 128, 500)
#: sshd servers at most; more hosts than this share them, a route each.
SERVERS = 32
#: The round trip the relays add, in ms.
RTT_MS = 50
#: Samples a row; the best is reported.
TRIES = 2
#: Seconds a run may take before it is ended and shown as not finished.
GIVE_UP = 300.0
#: The OpenSSH builds compared: a label, and the folder whose bin/ and sbin/ hold
#: its ssh and sshd (None: the system's).
OPENSSH: dict[str, str | None] = {"9.2": None, "10.5": "/opt/openssh-10.5"}

FABFILE = """\
import sys
from concurrent.futures import ThreadPoolExecutor

from fabric import Connection, task


def two_runs(c):
    c.run("true", hide=True)
    c.run("true", hide=True)


@task
def fleet(c):
    two_runs(c)


@task
def stock(c, names):
    # Stock Fabric fans out as ThreadingGroup does: a Connection (a login) a thread.
    connections = [Connection(host, config=c.config) for host in names.split(",")]

    def one(connection):
        try:
            two_runs(connection)
        finally:
            connection.close()

    with ThreadPoolExecutor(len(connections)) as pool:
        list(pool.map(one, connections))
"""


@dataclass
class Row:
    label: str
    samples: list[float] = field(default_factory=list)
    logins: list[int] = field(default_factory=list)

    @property
    def best(self) -> float | None:
        return min(self.samples) if self.samples else None


@dataclass
class Size:
    hosts: int
    rows: dict[str, Row]
    notes: list[str] = field(default_factory=list)


class Fleet:
    """The servers, one ssh_config naming every host, and the project folder."""

    def __init__(self, stack: ExitStack, openssh: str | None, hosts: int) -> None:
        self.openssh = openssh
        self.env = clean_env()
        if openssh:
            self.env["PATH"] = f"{openssh}/bin:{self.env.get('PATH', '')}"
        self.ssh = f"{openssh}/bin/ssh" if openssh else "ssh"
        user = remote_user()
        folder = scratch(stack, "fmb-fleet-")
        folder.chmod(0o755)  # the remote account reads its authorized_keys below it
        sshd = f"{openssh}/sbin/sshd" if openssh else None
        self.servers = [
            stack.enter_context(
                ssh_server(
                    folder / f"s{n}",
                    user=user,
                    aliases=(f"srv{n}",),
                    sshd_path=sshd,
                    latency_ms=RTT_MS / 2,
                    sshd_options=["MaxStartups 200"],
                )
            )
            for n in range(1, min(SERVERS, hosts) + 1)
        ]
        # One key for the whole fleet, as a user has: stock Fabric adds every
        # IdentityFile it meets to the config its threads share, and a server
        # offered many wrong keys ends the login (MaxAuthTries).
        key = self.servers[0].client_key
        for server in self.servers[1:]:
            (server.directory / "authorized_keys").write_bytes(
                key.with_name(key.name + ".pub").read_bytes()
            )
        self.hosts = [f"fl{n}" for n in range(1, hosts + 1)]
        known = folder / "known_hosts"
        blocks = []
        keys = []
        for index, host in enumerate(self.hosts):
            server = self.servers[index % len(self.servers)]
            assert server.relay is not None
            keys.append(
                f"{host} {server.known_hosts.read_text().splitlines()[0].split(None, 1)[1]}"
            )
            blocks.append(
                f"Host {host}\n    HostName 127.0.0.1\n    Port {server.relay.port}\n"
                f"    HostKeyAlias {host}\n    User {server.user}\n"
            )
        known.write_text("\n".join(keys) + "\n")
        self.ssh_config = folder / "ssh_config"
        self.ssh_config.write_text(
            "".join(blocks) + f"Host *\n    IdentityFile {key}\n    IdentitiesOnly yes\n"
            f"    UserKnownHostsFile {known}\n    GlobalKnownHostsFile /dev/null\n"
            "    StrictHostKeyChecking yes\n    BatchMode yes\n"
        )
        #: The last run's peak resident memory, in bytes.
        self.peak = 0
        self.project = folder / "project"
        self.project.mkdir()
        (self.project / "fabfile.py").write_text(FABFILE)

    def logins(self) -> int:
        return sum(server.logins() for server in self.servers)

    def settle(self, before: int) -> None:
        """Wait (at most 5 s, untimed) for the servers to end what the last sample opened."""
        deadline = time.monotonic() + 5
        while self.processes() > before and time.monotonic() < deadline:
            time.sleep(0.02)
        reap_orphans()

    def processes(self) -> int:
        return sum(server.processes() for server in self.servers)

    def run(self, argv: list[str], extra_env: dict[str, str] | None = None) -> float:
        """Seconds ``argv`` took in the project folder; it must succeed."""
        env = {**self.env, **(extra_env or {})}
        with tempfile.TemporaryFile() as errors:
            start = time.perf_counter()
            proc = subprocess.Popen(
                argv,
                cwd=self.project,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=errors,
            )
            timer = threading.Timer(GIVE_UP, proc.kill)
            timer.start()
            _, status, usage = os.wait4(proc.pid, 0)
            timer.cancel()
            seconds = time.perf_counter() - start
            if seconds >= GIVE_UP:
                return math.inf  # shown as not finished
            proc.returncode = os.waitstatus_to_exitcode(status)
            self.peak = usage.ru_maxrss * 1024
            if proc.returncode != 0:
                errors.seek(0)
                said = errors.read().decode("utf-8", "replace").strip()[-2000:]
                raise RuntimeError(f"{argv[:6]}... exited with {proc.returncode}: {said}")
        return seconds

    def floor(self) -> float:
        """Every host's ``ssh HOST true`` started at once: OpenSSH's own floor."""
        start = time.perf_counter()
        procs = [
            subprocess.Popen(
                [self.ssh, "-F", str(self.ssh_config), host, "true"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env=self.env,
            )
            for host in self.hosts
        ]
        failed = [p for p in procs if p.wait() != 0]
        seconds = time.perf_counter() - start
        if failed:
            raise RuntimeError(f"{len(failed)} ssh failed: {failed[0].stderr.read()!r}")  # type: ignore[union-attr]
        for proc in procs:
            proc.stderr.close()  # type: ignore[union-attr]
        return seconds

    def alone(self, folder: Path) -> float:
        """The task's work with OpenSSH alone, every host at once: a master
        (``ssh -fNM -S``), then the task's two commands over it (``ssh -S``).
        The masters are left up in ``folder``, for the caller to end."""
        base = [self.ssh, "-F", str(self.ssh_config)]

        def one(host: str) -> None:
            socket = str(folder / host)
            for argv in (
                [*base, "-fNM", "-S", socket, host],
                [*base, "-S", socket, host, "true"],
                [*base, "-S", socket, host, "true"],
            ):
                # stderr to a file: a -f master keeps a pipe open for as long as it lives.
                with tempfile.TemporaryFile() as errors:
                    done = subprocess.run(
                        argv,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=errors,
                        check=False,
                    )
                    if done.returncode != 0:
                        errors.seek(0)
                        raise RuntimeError(f"{argv} failed: {errors.read()!r}")

        start = time.perf_counter()
        with ThreadPoolExecutor(len(self.hosts)) as pool:
            list(pool.map(one, self.hosts))
        return time.perf_counter() - start


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
        before, processes = fleet.logins(), fleet.processes()
        rows[key].samples.append(action())
        rows[key].logins.append(fleet.logins() - before)
        fleet.settle(processes)

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
            text = "n/a" if best is None else f"{best:.2f} s"
            if best is not None and math.isinf(best):
                text = f"did not finish in {GIVE_UP:.0f} s"
            if row.logins:
                text += f" ({statistics.median(row.logins):g} logins)"
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
