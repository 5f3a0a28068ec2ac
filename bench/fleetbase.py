"""What ``inv bench fleet`` and ``inv bench peers`` share: relayed sshd servers naming
N hosts, the task they run, and rows of timed tries with the logins each made.

Up to :data:`SERVERS` real sshd servers, each behind a
:class:`~fabric_mux.relay.LatencyRelay` adding a :data:`RTT_MS` round trip. A run of
N hosts spreads N aliases over them, each a distinct route (its own
``HostKeyAlias``): its own master and its own login, as distinct hosts would have.
Logins are counted on the servers' logs.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from fabric_mux.testing import ssh_server

from .common import clean_env, reap_orphans, remote_user, scratch

__all__ = ["FABFILE", "GIVE_UP", "RTT_MS", "SERVERS", "TRIES", "Fleet", "Row", "Size", "timing"]

#: sshd servers at most; more hosts than this share them, a route each.
SERVERS = 32
#: The round trip the relays add, in ms.
RTT_MS = 50
#: Samples a row; the best is reported.
TRIES = 2
#: Seconds a run may take before it is ended and shown as not finished.
GIVE_UP = 300.0
#: The address every host's relay listens on.
ADDRESS = "127.0.0.1"

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
    #: The logins a try should make, when the row checks them.
    expected: int | None = None
    #: Why the row has no more tries, in a word or two (the notes say more).
    failure: str | None = None

    @property
    def best(self) -> float | None:
        return min(self.samples) if self.samples else None


@dataclass
class Size:
    hosts: int
    rows: dict[str, Row]
    notes: list[str] = field(default_factory=list)


def timing(row: Row) -> str:
    """A row's cell before its ratios: its best time and its logins a try."""
    best = row.best
    if row.failure and best is None:
        return row.failure
    if best is None:
        return "n/a"
    text = f"did not finish in {GIVE_UP:.0f} s" if math.isinf(best) else f"{best:.2f} s"
    if not row.logins:
        return text
    if row.expected is None:
        return f"{text} ({statistics.median(row.logins):g} logins)"
    if all(count == row.expected for count in row.logins):
        return f"{text} ({row.expected} logins)"
    counts = ", ".join(map(str, row.logins))
    return f"{text} (**logins {counts}: {row.expected} expected**)"


class Fleet:
    """The servers, one ssh_config naming every host, and the project folder."""

    def __init__(self, stack: ExitStack, openssh: str | None, hosts: int) -> None:
        self.openssh = openssh
        self.env = clean_env()
        if openssh:
            self.env["PATH"] = f"{openssh}/bin:{self.env.get('PATH', '')}"
        self.ssh = f"{openssh}/bin/ssh" if openssh else "ssh"
        self.user = remote_user()
        folder = scratch(stack, "fmb-fleet-")
        folder.chmod(0o755)  # the remote account reads its authorized_keys below it
        sshd = f"{openssh}/sbin/sshd" if openssh else None
        self.servers = [
            stack.enter_context(
                ssh_server(
                    folder / f"s{n}",
                    user=self.user,
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
        self.key = self.servers[0].client_key
        for server in self.servers[1:]:
            (server.directory / "authorized_keys").write_bytes(
                self.key.with_name(self.key.name + ".pub").read_bytes()
            )
        self.hosts = [f"fl{n}" for n in range(1, hosts + 1)]
        #: Each host's relay port on :data:`ADDRESS`.
        self.ports: dict[str, int] = {}
        known = folder / "known_hosts"
        blocks = []
        keys: dict[str, str] = {}
        #: The same host keys by address (``[127.0.0.1]:PORT``), for clients
        #: that know no HostKeyAlias.
        self.known_by_address = folder / "known_hosts_by_address"
        by_address: dict[str, str] = {}
        for index, host in enumerate(self.hosts):
            server = self.servers[index % len(self.servers)]
            assert server.relay is not None
            self.ports[host] = server.relay.port
            key = server.known_hosts.read_text().splitlines()[0].split(None, 1)[1]
            keys[host] = key
            by_address[f"[{ADDRESS}]:{server.relay.port}"] = key
            blocks.append(
                f"Host {host}\n    HostName {ADDRESS}\n    Port {server.relay.port}\n"
                f"    HostKeyAlias {host}\n    User {server.user}\n"
            )
        known.write_text("".join(f"{name} {key}\n" for name, key in keys.items()))
        self.known_by_address.write_text(
            "".join(f"{name} {key}\n" for name, key in by_address.items())
        )
        self.ssh_config = folder / "ssh_config"
        self.ssh_config.write_text(
            "".join(blocks) + f"Host *\n    IdentityFile {self.key}\n    IdentitiesOnly yes\n"
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

    def sample(self, row: Row, action: Callable[[], float]) -> None:
        """One try of ``row``: its seconds and the logins it made, then the servers
        left to settle."""
        before, processes = self.logins(), self.processes()
        try:
            row.samples.append(action())
            row.logins.append(self.logins() - before)
        finally:
            self.settle(processes)

    def run(self, argv: list[str], extra_env: dict[str, str] | None = None) -> float:
        """Seconds ``argv`` took in the project folder; it must succeed.

        It runs in a session of its own: one that takes :data:`GIVE_UP` seconds
        is ended with every process of that session (a tool's workers too).
        """
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
                start_new_session=True,
            )
            timer = threading.Timer(GIVE_UP, _end_session, (proc.pid,))
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
        deadline = start + GIVE_UP
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
        try:
            failed = [p for p in procs if p.wait(max(0.0, deadline - time.perf_counter())) != 0]
        except subprocess.TimeoutExpired:
            for proc in procs:
                proc.kill()
                proc.wait()
                proc.stderr.close()  # type: ignore[union-attr]
            return math.inf
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
        deadline = time.perf_counter() + GIVE_UP

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
                        timeout=max(0.0, deadline - time.perf_counter()),
                    )
                    if done.returncode != 0:
                        errors.seek(0)
                        raise RuntimeError(f"{argv} failed: {errors.read()!r}")

        start = time.perf_counter()
        try:
            with ThreadPoolExecutor(len(self.hosts)) as pool:
                list(pool.map(one, self.hosts))
        except subprocess.TimeoutExpired:
            return math.inf
        return time.perf_counter() - start


def _end_session(leader: int) -> None:
    """Kill the process group ``leader`` started (it may have ended meanwhile)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(leader, signal.SIGKILL)
