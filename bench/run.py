"""``inv bench``: stock Fabric vs fabric-mux vs raw OpenSSH against one throwaway sshd.

Every measurement is a median over interleaved repetitions (each round runs
every variant once, starting with a different one), so drift on a shared
machine hits all variants alike. Logins are counted in the server's log.
"""

from __future__ import annotations

import compileall
import functools
import io
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import fabric
from fabric import Connection, Group, ThreadingGroup
from invoke.watchers import Responder

import fabric_mux
from fabric_mux import MuxConnection
from fabric_mux import resolve as mux_resolve
from fabric_mux.group import MuxThreadingGroup
from fabric_mux.testing import SshServer

from .common import (
    console_script,
    control_dir,
    light_server,
    memory,
    no_agent,
    protocol_session,
    reap_orphans,
    reaping,
    remote_folder,
    run_quiet,
    scratch,
    timed,
    unwinding_on_signals,
)

__all__ = ["DEFAULT_REPEAT", "RESULTS", "SECTIONS", "run_bench"]

#: Rounds per measurement: the whole bench then takes about a minute here (2 cores).
DEFAULT_REPEAT = 7
#: Section b's commands take milliseconds: it runs this many times more rounds.
WARM_FACTOR = 20
WARMUP = 2
SIZE = 128 * 10**6
THREADS = 16
THREAD_COMMANDS = 5
FAB_TASKS = tuple(f"t{n}" for n in range(1, 6))
FAB_RUNS_PER_TASK = 3
#: Section f: host aliases of the one sshd, each a route of its own, and runs a group.
HOSTS = 50
HOST_RUNS = 10
#: Section f's samples take seconds: it runs this many rounds for DEFAULT_REPEAT.
HOSTS_ROUNDS = 3
RESULTS = Path(__file__).with_name("results.md")
#: Every section's letter.
SECTIONS = "abcdefghijk"
#: Section g: the small transfers' size.
SMALL = 10_000
#: Section h: hosts of a cold fab run, and what its task does on each.
FLEET = 5
DEPLOY_RUNS = 3
#: Section i: bytes of output a run captures.
CAPTURE = 100 * 2**20
#: Section j: hosts of one run (aliases of one sshd, each a route of its own).
SCALE = (50, 200, 500)
#: Section k: hosts of a parallel deploy, and what it does on each.
PARALLEL_HOSTS = 10
PARALLEL_RUNS = 5
_CLASSIC_KEX = "KexAlgorithms=curve25519-sha256"

PARALLEL_FABFILE = f"""\
from fabric import task

@task
def deploy(c):
    for _ in range({PARALLEL_RUNS}):
        c.run("true")
    c.put("payload.bin", f"fmux-k-{{c.original_host}}.bin")
    c.get(f"fmux-k-{{c.original_host}}.bin", f"back/{{c.original_host}}.bin")
"""

#: The same deploy in stock Fabric, a thread a host (as ThreadingGroup runs).
THREADED_DEPLOY = f"""\
import sys
from concurrent.futures import ThreadPoolExecutor
import fabric

config = fabric.Config(runtime_ssh_path=sys.argv[1])
hosts = sys.argv[2].split(",")
connections = [fabric.Connection(h, config=config) for h in hosts]

def deploy(c):
    for _ in range({PARALLEL_RUNS}):
        c.run("true", hide=True)
    c.put("payload.bin", f"fmux-k-{{c.original_host}}.bin")
    c.get(f"fmux-k-{{c.original_host}}.bin", f"back/{{c.original_host}}.bin")
    c.close()

with ThreadPoolExecutor(len(connections)) as pool:
    list(pool.map(deploy, connections))
"""

#: One run over many hosts in a new process, for section j's warm row.
NEW_PROCESS_RUN = """\
import sys, time
start = time.perf_counter()
import fabric
from fabric_mux.group import MuxThreadingGroup
config = fabric.Config(runtime_ssh_path=sys.argv[1],
                       overrides={"mux": {"control_dir": sys.argv[2], "prefix": False}})
group = MuxThreadingGroup(*sys.argv[3].split(","), config=config)
group.run("true", hide=True)
print(time.perf_counter() - start)
"""

DEPLOY_FABFILE = f"""\
from fabric import task

@task
def deploy(c):
    for _ in range({DEPLOY_RUNS}):
        c.run("true")
    c.put("payload.bin", "fmux-bench-payload.bin")
"""

FABFILE = f"""\
from fabric import task

for _n in range(1, {len(FAB_TASKS) + 1}):
    def _body(c):
        for _ in range({FAB_RUNS_PER_TASK}):
            c.run("true")
    globals()[f"t{{_n}}"] = task(name=f"t{{_n}}")(_body)
"""


@dataclass
class Variant:
    """One way of doing a section's job, and what measuring it gave."""

    label: str
    #: One sample in seconds; it may do untimed set-up and clean-up around its timer.
    measure: Callable[[], float]
    samples: list[float] = field(default_factory=list)
    logins: int = 0

    @property
    def median(self) -> float | None:
        if not self.samples:
            return None
        return statistics.median(self.samples)


@dataclass
class Section:
    key: str
    title: str
    variants: list[Variant]
    #: Bytes moved a sample: shown as MB/s; 0: shown as a time.
    size: int = 0
    #: Lines for the report's notes, below the ratios.
    notes: list[str] = field(default_factory=list)


@dataclass
class Check:
    """A ratio between two variants' medians, and the promise it is held to."""

    label: str
    numerator: Variant
    denominator: Variant
    promise: str = ""
    holds: Callable[[float], bool] | None = None

    @property
    def value(self) -> float | None:
        top, bottom = self.numerator.median, self.denominator.median
        if top is None or bottom is None:
            return None
        return top / bottom


def results_file(rtt_ms: float) -> Path:
    """Where a full run's report goes: one file for loopback, one per round trip."""
    return RESULTS if not rtt_ms else RESULTS.with_name(f"results-rtt{rtt_ms:g}ms.md")


def byte_compile_package() -> None:
    """fabric_mux's modules compiled, as ``pip install`` leaves an installed package.

    Where PYTHONDONTWRITEBYTECODE is set (as on the machine of the README's
    figures) an editable checkout is otherwise compiled from source in every
    ``fab`` the bench starts, about 20 ms a run that fabric's installed
    modules never pay.
    """
    compileall.compile_dir(os.path.dirname(fabric_mux.__file__), quiet=1)


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
    load_before = os.getloadavg()[0]
    with ExitStack() as stack:
        # Entered first, left last: reaps what the clean-ups below ended.
        stack.enter_context(reaping())
        stack.enter_context(unwinding_on_signals())
        stack.enter_context(no_agent())
        server = light_server(stack, latency_ms=rtt_ms / 2 if rtt_ms else None)
        bench = _Bench(stack, server, rtt_ms)
        runners = {
            "a": bench.section_a,
            "b": bench.section_b,
            "c": bench.section_c,
            "d": bench.section_d,
            "e": bench.section_e,
            "f": bench.section_f,
            "g": bench.section_g,
            "h": bench.section_h,
            "i": bench.section_i,
            "j": bench.section_j,
            "k": bench.section_k,
        }
        sections: list[Section] = []
        checks: list[Check] = []
        for key, run in runners.items():
            if key in only:
                found, promised = run(repeat)
                sections += found
                checks += promised
        load = (load_before, os.getloadavg()[0])
        report = _report(repeat, only, rtt_ms, load, server, sections, checks)
    if set(only) == set(SECTIONS):  # a partial run must not replace the README's figures
        results_file(rtt_ms).write_text(report)
    return report


class _Bench:
    """The server, the warm connections and the folders that the sections share."""

    def __init__(self, stack: ExitStack, server: SshServer, rtt_ms: float = 0) -> None:
        self.stack = stack
        self.server = server
        #: The round trip the relay adds (0: loopback); promises differ by it.
        self.rtt_ms = rtt_ms
        self.alias = server.alias
        self.cfg = str(server.ssh_config)
        self.ssh = _which("ssh")
        self.stock_config = server.fabric_config()
        # The warm master of sections b, c and e; stopped before the server goes.
        self.warm_dir = control_dir(stack)
        self.mux_config = self._mux_config(self.warm_dir)

    def _mux_config(self, folder: Path, ssh_options: Sequence[str] = ()) -> fabric.Config:
        mux = {"control_dir": str(folder), "ssh_options": list(ssh_options)}
        return self.server.fabric_config({"mux": mux})

    @functools.cached_property
    def warm_stock(self) -> Connection:
        connection = Connection(self.alias, config=self.stock_config)
        self.stack.callback(connection.close)
        connection.open()
        return connection

    @functools.cached_property
    def warm_mux(self) -> MuxConnection:
        connection = MuxConnection(self.alias, config=self.mux_config)
        self.stack.callback(connection.close)
        connection.open()
        return connection

    @property
    def control_path(self) -> str:
        path = self.warm_mux.control_path
        assert path is not None
        return path

    def _measure(self, section: Section, rounds: int, warmup: int = 0) -> None:
        variants = section.variants
        print(f"bench: {section.title} ({rounds} rounds)", file=sys.stderr, flush=True)
        for _ in range(warmup):
            for variant in variants:
                self._sample(variant, keep=False)
        for index in range(rounds):
            shift = index % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                self._sample(variant, keep=True)

    def _sample(self, variant: Variant, keep: bool, server: SshServer | None = None) -> None:
        """One sample, its logins counted on ``server`` (the bench's own by default)."""
        server = server or self.server
        before = server.logins()
        processes = server.processes()
        seconds = variant.measure()
        if keep:
            variant.samples.append(seconds)
            variant.logins += server.logins() - before
        self._settle(processes, server)

    def _settle(self, processes: int, server: SshServer) -> None:
        """Let the server finish tearing down what the last sample opened.

        A stock run leaves sshd processes exiting for a moment after it ends;
        whichever variant came next would pay for them. Wait (at most 2 s,
        untimed) until the server runs no more processes than before it.
        """
        deadline = time.monotonic() + 2
        while server.processes() > processes and time.monotonic() < deadline:
            time.sleep(0.01)

    # -- a. cold connect ---------------------------------------------------

    def section_a(self, repeat: int) -> tuple[list[Section], list[Check]]:
        def stock() -> float:
            start = time.perf_counter()
            connection = Connection(self.alias, config=self.stock_config)
            try:
                connection.run("true", hide=True)
                return time.perf_counter() - start
            finally:
                connection.close()

        def mux(*ssh_options: str) -> float:
            with ExitStack() as local:
                config = self._mux_config(control_dir(local), ssh_options)
                _forget_resolved_configs()
                start = time.perf_counter()
                connection = MuxConnection(self.alias, config=config)
                try:
                    connection.run("true", hide=True)
                    return time.perf_counter() - start
                finally:
                    connection.close()

        def raw() -> float:
            return timed(lambda: run_quiet([self.ssh, "-F", self.cfg, self.alias, "true"]))

        variants = [
            Variant("stock Fabric: new `Connection(alias).run('true')`", stock),
            Variant("fabric-mux: new `MuxConnection`, cold master", mux),
            Variant("OpenSSH: `ssh -F cfg alias true`", raw),
            # OpenSSH 9.2 picks the post-quantum sntrup761x25519 kex, which paramiko
            # lacks: this row shows how much of the gap that alone is.
            Variant(
                f"fabric-mux, cold master, `{_CLASSIC_KEX}` (paramiko's kex here)",
                lambda: mux(_CLASSIC_KEX),
            ),
        ]
        section = Section("a", "a. cold connect + one `true`", variants)
        self._measure(section, repeat)
        s, m, r, k = variants
        return [section], [
            Check("a. stock ÷ mux (cold)", s, m),
            Check("a. stock ÷ mux with paramiko's kex (cold)", s, k),
            Check("a. mux ÷ raw ssh (cold)", m, r),
        ]

    # -- b. warm run -------------------------------------------------------

    def section_b(self, repeat: int) -> tuple[list[Section], list[Check]]:
        stock, mux, path = self.warm_stock, self.warm_mux, self.control_path
        ssh_s = [self.ssh, "-F", self.cfg, "-S", path, self.alias, "true"]
        variants = [
            Variant("stock Fabric `c.run`", lambda: timed(lambda: stock.run("true", hide=True))),
            Variant("fabric-mux `c.run`", lambda: timed(lambda: mux.run("true", hide=True))),
            Variant(
                "OpenSSH mux client: `ssh -S path alias true`",
                lambda: timed(lambda: run_quiet(ssh_s)),
            ),
            Variant(
                "bare protocol session (`MuxClient`)",
                lambda: timed(lambda: protocol_session(path, "true")),
            ),
        ]
        section = Section("b", "b. warm `c.run('true', hide=True)` on an open connection", variants)
        self._measure(section, repeat * WARM_FACTOR, warmup=WARMUP)
        s, m, o, p = variants
        if self.rtt_ms:
            return [section], [
                Check("b. `ssh -S` ÷ mux", o, m),
                Check("b. stock ÷ mux", s, m),
                Check("b. mux ÷ bare protocol", m, p, "≤ 1.5", lambda v: v <= 1.5),
            ]
        return [section], [
            Check("b. `ssh -S` ÷ mux", o, m, "≥ 2", lambda v: v >= 2.0),
            Check("b. stock ÷ mux", s, m, "> 1", lambda v: v > 1.0),
            Check("b. mux ÷ bare protocol (runner overhead)", m, p),
        ]

    # -- c. fab ------------------------------------------------------------

    def section_c(self, repeat: int) -> tuple[list[Section], list[Check]]:
        fab = console_script("fab")
        plain = scratch(self.stack, "fmb-fab-")
        muxed = scratch(self.stack, "fmb-fabmux-")
        for project in (plain, muxed):
            (project / "fabfile.py").write_text(FABFILE)
        (muxed / "fabric.yaml").write_text(
            "tasks:\n"
            "  executor_class: fabric_mux.MuxExecutor\n"
            "mux:\n"
            f"  control_dir: {self.warm_dir}\n"
        )
        argv = [fab, "-S", self.cfg, "-H", self.alias, *FAB_TASKS]
        path = self.control_path
        sessions = len(FAB_TASKS) * FAB_RUNS_PER_TASK

        def floor() -> None:
            run_quiet([fab, "-S", self.cfg, "--list"], cwd=muxed)
            for _ in range(sessions):
                protocol_session(path, "true")

        variants = [
            Variant("stock `fab`", lambda: timed(lambda: run_quiet(argv, cwd=plain))),
            Variant(
                "`fab` + MuxExecutor (fabric.yaml), warm master",
                lambda: timed(lambda: run_quiet(argv, cwd=muxed)),
            ),
            Variant(
                f"floor: `fab --list` + {sessions} bare protocol sessions", lambda: timed(floor)
            ),
        ]
        tasks = " ".join(FAB_TASKS)
        title = f"c. `fab -H alias {tasks}` ({FAB_RUNS_PER_TASK} `c.run('true')` a task)"
        section = Section("c", title, variants)
        # The first warm-up run also checks that the master it finds is the warm one.
        self._measure(section, repeat, warmup=1)
        s, m, f = variants
        if self.rtt_ms:
            return [section], [Check("c. stock ÷ mux", s, m), Check("c. mux ÷ floor", m, f)]
        return [section], [
            Check("c. stock ÷ mux", s, m, "≥ 3.5", lambda v: v >= 3.5),
            Check("c. mux ÷ floor", m, f, "≤ 1.3", lambda v: v <= 1.3),
        ]

    # -- d. threads --------------------------------------------------------

    def section_d(self, repeat: int) -> tuple[list[Section], list[Check]]:
        def stock() -> float:
            return timed(lambda: _in_threads(Connection, self.stock_config, self.alias))

        def mux() -> float:
            with ExitStack() as local:
                config = self._mux_config(control_dir(local))
                _forget_resolved_configs()
                return timed(lambda: _in_threads(MuxConnection, config, self.alias))

        variants = [
            Variant("stock Fabric, a `Connection` a thread", stock),
            Variant("fabric-mux, a `MuxConnection` a thread, cold master", mux),
        ]
        title = f"d. {THREADS} threads x {THREAD_COMMANDS} `run('true')`, one host"
        section = Section("d", title, variants)
        self._measure(section, repeat)
        s, m = variants
        return [section], [
            Check("d. stock ÷ mux", s, m),
        ]

    # -- e. transfers ------------------------------------------------------

    def section_e(self, repeat: int) -> tuple[list[Section], list[Check]]:
        stock, mux, path = self.warm_stock, self.warm_mux, self.control_path
        local = scratch(self.stack, "fmb-xfer-")
        payload = local / "payload.bin"
        _write_random(payload, SIZE)
        remote = remote_folder(self.server, "xfer")
        source = remote / "source.bin"
        shutil.copyfile(payload, source)
        shutil.chown(source, self.server.user)
        uploaded = remote / "up.bin"
        downloaded = local / "down.bin"
        put_batch = local / "put.batch"
        put_batch.write_text(f'put "{payload}" "{uploaded}"\n')
        get_batch = local / "get.batch"
        get_batch.write_text(f'get "{source}" "{downloaded}"\n')
        sftp = [_which("sftp"), "-F", self.cfg, "-o", f"ControlPath={path}", "-b"]
        ssh_s = [self.ssh, "-F", self.cfg, "-S", path, self.alias]

        def put(action: Callable[[], object]) -> Callable[[], float]:
            def measure() -> float:
                uploaded.unlink(missing_ok=True)
                # Last round's dirty pages would be written out during this one.
                os.sync()
                seconds = timed(action)
                _check_size(uploaded)
                return seconds

            return measure

        def get(action: Callable[[], object]) -> Callable[[], float]:
            def measure() -> float:
                downloaded.unlink(missing_ok=True)
                os.sync()
                seconds = timed(action)
                _check_size(downloaded)
                return seconds

            return measure

        def cat_up() -> None:
            with payload.open("rb") as stdin:
                run_quiet([*ssh_s, f"cat > {shlex.quote(str(uploaded))}"], stdin=stdin)

        def cat_down() -> None:
            with downloaded.open("wb") as stdout:
                run_quiet([*ssh_s, f"cat {shlex.quote(str(source))}"], stdout=stdout)

        puts = [
            Variant("stock Fabric `c.put`", put(lambda: stock.put(str(payload), str(uploaded)))),
            Variant("fabric-mux `c.put`", put(lambda: mux.put(str(payload), str(uploaded)))),
            Variant(
                "OpenSSH `sftp -b` through the master",
                put(lambda: run_quiet([*sftp, str(put_batch), self.alias])),
            ),
            Variant("ceiling: `ssh -S path alias 'cat > f'` < file", put(cat_up)),
        ]
        gets = [
            Variant("stock Fabric `c.get`", get(lambda: stock.get(str(source), str(downloaded)))),
            Variant("fabric-mux `c.get`", get(lambda: mux.get(str(source), str(downloaded)))),
            Variant(
                "OpenSSH `sftp -b` through the master",
                get(lambda: run_quiet([*sftp, str(get_batch), self.alias])),
            ),
            Variant("ceiling: `ssh -S path alias 'cat f'` > file", get(cat_down)),
        ]
        megabytes = SIZE // 10**6
        sections = [
            Section("e", f"e. put of a {megabytes} MB file", puts, size=SIZE),
            Section("e", f"e. get of a {megabytes} MB file", gets, size=SIZE),
        ]
        checks: list[Check] = []
        for section in sections:
            self._measure(section, repeat)
            s, m, o, c = section.variants
            verb = section.title.split()[1]
            checks += [
                Check(f"e. {verb}: mux speed ÷ stock", s, m),
                Check(f"e. {verb}: mux speed ÷ OpenSSH sftp", o, m, "≥ 1", lambda v: v >= 1.0),
                Check(f"e. {verb}: mux speed ÷ ceiling", c, m),
            ]
        for path_ in (payload, source, uploaded, downloaded):
            path_.unlink(missing_ok=True)
        return sections, checks

    # -- f. many hosts -----------------------------------------------------

    def section_f(self, repeat: int) -> tuple[list[Section], list[Check]]:
        aliases = self.server.routes(HOSTS, prefix="h")
        ssh_config = self.cfg
        stock_config = fabric.Config(runtime_ssh_path=ssh_config)

        def mux_config(folder: Path) -> fabric.Config:
            mux = {"control_dir": str(folder)}
            return fabric.Config(runtime_ssh_path=ssh_config, overrides={"mux": mux})

        def mux_group(config: fabric.Config, hosts: Sequence[str]) -> Group:
            return ThreadingGroup.from_connections([MuxConnection(h, config=config) for h in hosts])

        def runs(group: Group) -> None:
            for _ in range(HOST_RUNS):
                group.run("true", hide=True)

        def stock() -> float:
            start = time.perf_counter()
            group = ThreadingGroup(*aliases, config=stock_config)
            try:
                runs(group)
                return time.perf_counter() - start
            finally:
                group.close()

        # Bytes the masters hold after each cold round: (RSS, PSS) sums.
        held: list[tuple[int, int]] = []

        def cold() -> float:
            with ExitStack() as local:
                config = mux_config(control_dir(local))
                _forget_resolved_configs()
                start = time.perf_counter()
                group = mux_group(config, aliases)
                try:
                    runs(group)
                    seconds = time.perf_counter() - start
                finally:
                    group.close()
                # Closing ends the connections' sessions; the masters persist.
                pids = {connection.master_pid for connection in group}
                if None in pids or len(pids) != HOSTS:
                    raise RuntimeError(f"{HOSTS} hosts, but masters {sorted(map(str, pids))}")
                held.append(memory(pid for pid in pids if pid is not None))
                return seconds

        title = (
            f"f. {HOSTS} hosts (aliases of the one sshd) x {HOST_RUNS}"
            " `group.run('true', hide=True)`, `ThreadingGroup`"
        )
        with ExitStack() as warm:
            # The warm rows' connections: opened here, outside any sample, and kept
            # until the section ends (masters stopped last: last in, first out).
            warm_config = mux_config(control_dir(warm))
            open_stock = ThreadingGroup(*aliases, config=stock_config)
            many = mux_group(warm_config, aliases)
            one = mux_group(warm_config, aliases[:1])
            for group in (open_stock, many, one):
                warm.callback(group.close)
                group.run("true", hide=True)
            variants = [
                Variant(f"stock Fabric: `ThreadingGroup` of {HOSTS} new `Connection`s", stock),
                Variant(
                    f"stock Fabric: the {HOST_RUNS} runs alone, {HOSTS} open `Connection`s",
                    lambda: timed(lambda: runs(open_stock)),
                ),
                Variant(
                    f"fabric-mux: `ThreadingGroup` of {HOSTS} new `MuxConnection`s, cold masters",
                    cold,
                ),
                Variant(
                    f"fabric-mux: the {HOST_RUNS} runs alone, {HOSTS} warm masters",
                    lambda: timed(lambda: runs(many)),
                ),
                Variant(
                    "fabric-mux: a group of 1 `MuxConnection`, 1 warm master",
                    lambda: timed(lambda: runs(one)),
                ),
            ]
            section = Section("f", title, variants)
            self._measure(section, max(1, round(repeat * HOSTS_ROUNDS / DEFAULT_REPEAT)))
        if held:
            rss = statistics.median(r for r, _ in held) / 10**6
            pss = statistics.median(p for _, p in held) / 10**6
            section.notes.append(
                f"f. memory of the {HOSTS} `ssh` masters after a cold round (median of"
                f" {len(held)}): VmRSS {rss:.0f} MB in all, {rss / HOSTS:.1f} MB a master;"
                f" PSS (shared pages split among them) {pss:.0f} MB, {pss / HOSTS:.1f} MB a master"
            )
        s, sw, c, w, o = variants
        return [section], [
            Check(f"f. {HOSTS} hosts ÷ 1 host (mux, warm)", w, o),
            Check(f"f. stock ÷ mux ({HOSTS} hosts)", s, c),
            Check(f"f. stock ÷ mux ({HOSTS} hosts, warm: the runs alone)", sw, w),
        ]

    # -- g. small transfers at the round-trip floor --------------------------------

    def section_g(self, repeat: int) -> tuple[list[Section], list[Check]]:
        stock, mux, path = self.warm_stock, self.warm_mux, self.control_path
        local = scratch(self.stack, "fmb-small-")
        payload = local / "small.bin"
        payload.write_bytes(os.urandom(SMALL))
        back = local / "back.bin"
        remote = f"fmux-bench-small-{os.getpid()}.bin"
        mux.put(str(payload), remote)  # the file the gets fetch
        self.stack.callback(lambda: mux.run(f"rm -f {remote}", hide=True, warn=True))

        def putfo(connection: Connection) -> float:
            data = io.BytesIO(payload.read_bytes())
            return timed(lambda: connection.put(data, remote))

        def put(connection: Connection) -> float:
            return timed(lambda: connection.put(str(payload), remote))

        def get(connection: Connection) -> float:
            return timed(lambda: connection.get(remote, str(back)))

        variants = [
            Variant(
                "bare protocol session (`MuxClient`): the floor",
                lambda: timed(lambda: protocol_session(path, "true")),
            ),
            Variant("stock Fabric `c.put` of a file", lambda: put(stock)),
            Variant("fabric-mux `c.put` of a file", lambda: put(mux)),
            Variant("stock Fabric `c.get` to a file", lambda: get(stock)),
            Variant("fabric-mux `c.get` to a file", lambda: get(mux)),
            Variant("stock Fabric `c.put` of a `BytesIO`", lambda: putfo(stock)),
            Variant("fabric-mux `c.put` of a `BytesIO`", lambda: putfo(mux)),
        ]
        title = f"g. warm transfers of {SMALL // 1000} KB: round trips, not bandwidth"
        section = Section("g", title, variants)
        self._measure(section, repeat * 3, warmup=1)
        floor, sp, mp, sg, mg, sf, mf = variants
        promise = ("≤ 1.5", lambda v: v <= 1.5) if self.rtt_ms else ("", None)
        return [section], [
            Check("g. mux put ÷ bare session", mp, floor, *promise),
            Check("g. mux get ÷ bare session", mg, floor, *promise),
            Check("g. mux put of a BytesIO ÷ bare session", mf, floor, *promise),
            Check("g. stock put ÷ mux put", sp, mp),
            Check("g. stock get ÷ mux get", sg, mg),
            Check("g. stock put of a BytesIO ÷ mux's", sf, mf),
        ]

    # -- h. a cold deploy over several hosts --------------------------------------------

    def section_h(self, repeat: int) -> tuple[list[Section], list[Check]]:
        fab = console_script("fab")
        hosts = self.server.routes(FLEET, prefix="deploy")
        plain = scratch(self.stack, "fmb-deploy-")
        muxed = scratch(self.stack, "fmb-deploymux-")
        for project in (plain, muxed):
            (project / "fabfile.py").write_text(DEPLOY_FABFILE)
            (project / "payload.bin").write_bytes(os.urandom(SMALL))
        warm_dir = control_dir(self.stack)

        def use(folder: Path) -> None:
            (muxed / "fabric.yaml").write_text(
                f"tasks:\n  executor_class: fabric_mux.MuxExecutor\nmux:\n  control_dir: {folder}\n"
            )

        argv = [fab, "-S", self.cfg, "-H", ",".join(hosts), "deploy"]

        def stock() -> float:
            return timed(lambda: run_quiet(argv, cwd=plain))

        def cold() -> float:
            with ExitStack() as local:
                folder = control_dir(local)  # stops its masters when the sample ends
                use(folder)
                return timed(lambda: run_quiet(argv, cwd=muxed))

        def warm() -> float:
            use(warm_dir)
            return timed(lambda: run_quiet(argv, cwd=muxed))

        variants = [
            Variant("stock `fab` (serial)", stock),
            Variant("`fab` + MuxExecutor, cold masters (started together)", cold),
            Variant("`fab` + MuxExecutor, warm masters", warm),
        ]
        title = (
            f"h. `fab -H {FLEET} hosts deploy`: {DEPLOY_RUNS} `run` and a {SMALL // 1000} KB"
            " `put` a host, serial"
        )
        section = Section("h", title, variants)
        self._measure(section, repeat, warmup=1)
        s, c, w = variants
        if self.rtt_ms:
            return [section], [
                Check("h. stock ÷ mux, cold", s, c, "≥ 1.5", lambda v: v >= 1.5),
                Check("h. stock ÷ mux, warm", s, w, "≥ 2", lambda v: v >= 2.0),
            ]
        return [section], [Check("h. stock ÷ mux, cold", s, c), Check("h. stock ÷ mux, warm", s, w)]

    # -- i. a big output ------------------------------------------------------------

    def section_i(self, repeat: int) -> tuple[list[Section], list[Check]]:
        mux = self.warm_mux
        command = f"head -c {CAPTURE} /dev/zero | tr '\\0' x"

        def capture(**kwargs: object) -> float:
            seconds = timed(lambda: mux.run(command, hide=True, **kwargs))
            return seconds

        variants = [
            Variant("fabric-mux `c.run`, hidden, no watchers", capture),
            Variant(
                "fabric-mux `c.run`, hidden, with a `Responder` (as sudo has)",
                lambda: capture(
                    watchers=[Responder(pattern=r"\[sudo\] password: ", response="x\n")]
                ),
            ),
        ]
        title = f"i. a command printing {CAPTURE // 2**20} MiB, captured"
        section = Section("i", title, variants, size=CAPTURE)
        self._measure(section, max(1, repeat // 2))
        section.notes.append(
            "i. invoke's own Runner joins the whole buffer for every chunk: 100 MB took"
            " about 70 s through it before fabric-mux replaced that step"
        )
        return [section], []

    # -- j. one run over many hosts ---------------------------------------------------

    def section_j(self, repeat: int) -> tuple[list[Section], list[Check]]:
        # A server of its own: 500 logins at once need more than MaxStartups 100.
        server = light_server(
            self.stack, "fmb-scale-", self.rtt_ms / 2 or None, ["MaxStartups 2000"]
        )
        sections: list[Section] = []
        checks: list[Check] = []
        for count in SCALE:
            hosts = server.routes(count, prefix=f"s{count}-")
            # Each size from a clean slate: the last size's masters stopped and reaped.
            with ExitStack() as rows:
                sections.append(self._scale(rows, server, hosts, checks))
            reap_orphans()
        return sections, checks

    def _scale(
        self, rows: ExitStack, server: SshServer, hosts: list[str], checks: list[Check]
    ) -> Section:
        count = len(hosts)
        cfg = str(server.ssh_config)
        stock_config = fabric.Config(runtime_ssh_path=cfg)

        def mux_config(folder: Path, *ssh_options: str) -> fabric.Config:
            mux = {"control_dir": str(folder), "ssh_options": list(ssh_options), "prefix": False}
            return fabric.Config(runtime_ssh_path=cfg, overrides={"mux": mux})

        warm_dir = control_dir(rows)
        held: list[str] = []
        kept: list[MuxThreadingGroup] = []

        def stock() -> float:
            start = time.perf_counter()
            group = ThreadingGroup(*hosts, config=stock_config)
            try:
                group.run("true", hide=True)
                return time.perf_counter() - start
            finally:
                group.close()

        def cold(*ssh_options: str, keep: bool = False) -> float:
            with ExitStack() as local:
                folder = warm_dir if keep else control_dir(local)
                _forget_resolved_configs()
                start = time.perf_counter()
                group = MuxThreadingGroup(*hosts, config=mux_config(folder, *ssh_options))
                group.run("true", hide=True)
                seconds = time.perf_counter() - start
                pids = [c.master_pid for c in group if c.master_pid]
                rss, pss = memory(pids)
                fds = sum(len(os.listdir(f"/proc/{pid}/fd")) for pid in pids)
                held.append(
                    f"{len(pids)} masters: PSS {pss / 10**6:.0f} MB ({pss / len(pids) / 10**6:.1f}"
                    f" MB each), RSS {rss / 10**6:.0f} MB, {fds} descriptors in all; this"
                    f" process {len(os.listdir('/proc/self/fd'))} descriptors"
                )
                group.close()
                if keep:
                    kept.append(group)
                return seconds

        def warm_same() -> float:
            group = kept[-1]
            return timed(lambda: group.run("true", hide=True))

        def warm_new() -> float:
            said = run_quiet(
                [sys.executable, "-c", NEW_PROCESS_RUN, cfg, str(warm_dir), ",".join(hosts)]
            )
            return float(said.strip())

        variants = [
            Variant(f"stock Fabric: `ThreadingGroup` of {count} new `Connection`s", stock),
            Variant("fabric-mux `MuxThreadingGroup`, cold (OpenSSH's default kex)",
                    lambda: cold(keep=True)),
            Variant(f"fabric-mux, cold, `{_CLASSIC_KEX}`", lambda: cold(_CLASSIC_KEX)),
            Variant("fabric-mux, warm masters, same process", warm_same),
            Variant("fabric-mux, warm masters, a new process", warm_new),
        ]  # fmt: skip
        title = f"j. {count} hosts: one `run('true')` on each, `ThreadingGroup`"
        section = Section("j", title, variants)
        print(f"bench: {title} (1 round)", file=sys.stderr, flush=True)
        for variant in variants:  # in order: the warm rows need the cold masters
            self._sample(variant, keep=True, server=server)
            reap_orphans()
        section.notes.append(f"j. {count} hosts, cold, default kex: {held[0]}")
        s, c, k, w, n = variants
        checks += [
            Check(f"j. {count}: stock ÷ mux cold (default kex)", s, c),
            Check(f"j. {count}: stock ÷ mux cold (curve25519)", s, k),
            Check(f"j. {count}: mux warm, new process ÷ same process", n, w, "≤ 2",
                  lambda v: v <= 2.0),
        ]  # fmt: skip
        return section

    # -- k. a parallel deploy ------------------------------------------------------------

    def section_k(self, repeat: int) -> tuple[list[Section], list[Check]]:
        fab, fabmux = console_script("fab"), console_script("fabmux")
        hosts = self.server.routes(PARALLEL_HOSTS, prefix="par")
        plain = scratch(self.stack, "fmb-par-")
        muxed = scratch(self.stack, "fmb-parmux-")
        for project in (plain, muxed):
            (project / "fabfile.py").write_text(PARALLEL_FABFILE)
            (project / "payload.bin").write_bytes(os.urandom(SMALL))
            (project / "back").mkdir()
        warm_dir = control_dir(self.stack)

        def use(folder: Path) -> None:
            (muxed / "fabric.yaml").write_text(
                f"tasks:\n  executor_class: fabric_mux.MuxExecutor\nmux:\n  control_dir: {folder}\n"
            )

        host_list = ",".join(hosts)

        def serial() -> float:
            return timed(
                lambda: run_quiet([fab, "-S", self.cfg, "-H", host_list, "deploy"], cwd=plain)
            )

        def threads() -> float:
            argv = [sys.executable, "-c", THREADED_DEPLOY, self.cfg, host_list]
            return timed(lambda: run_quiet(argv, cwd=plain))

        def parallel(folder: Path | None) -> float:
            with ExitStack() as local:
                use(folder or control_dir(local))
                argv = [fabmux, "-S", self.cfg, "-H", host_list, "-P", "deploy"]
                return timed(lambda: run_quiet(argv, cwd=muxed))

        variants = [
            Variant("stock `fab` (serial)", serial),
            Variant("stock Fabric, a thread a host (as `ThreadingGroup` runs)", threads),
            Variant("`fabmux -P`, cold masters", lambda: parallel(None)),
            Variant("`fabmux -P`, warm masters", lambda: parallel(warm_dir)),
        ]
        title = (
            f"k. deploy on {PARALLEL_HOSTS} hosts: {PARALLEL_RUNS} `run`, a {SMALL // 1000} KB"
            " `put` and `get` a host"
        )
        section = Section("k", title, variants)
        self._measure(section, max(1, repeat // 2), warmup=1)
        s, t, c, w = variants
        promise_cold = ("≥ 1", lambda v: v >= 1.0) if self.rtt_ms else ("", None)
        promise_warm = ("≤ 0.7", lambda v: v <= 0.7) if self.rtt_ms else ("", None)
        return [section], [
            Check("k. threads ÷ `fabmux -P` cold", t, c, *promise_cold),
            Check("k. `fabmux -P` warm ÷ threads", w, t, *promise_warm),
            Check("k. serial stock ÷ `fabmux -P` warm", s, w),
        ]


def _forget_resolved_configs() -> None:
    # A new process runs `ssh -G` once per route: a cold row should pay for it too.
    mux_resolve.forget()


def _in_threads(cls: type[Connection], config: fabric.Config, host: str) -> None:
    """Each thread runs commands on a connection object of its own.

    The objects are made first, as ``ThreadingGroup`` does: Fabric's
    ``Connection()`` writes into the shared config (``key_filename`` from
    ssh_config), and invoke rebuilds a config from empty on every write, so
    threads reading it meanwhile can find it empty.
    """
    connections = [cls(host, config=config) for _ in range(THREADS)]

    def work(connection: Connection) -> None:
        try:
            for _ in range(THREAD_COMMANDS):
                connection.run("true", hide=True)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        futures = [pool.submit(work, connection) for connection in connections]
    for future in futures:
        future.result()


def _write_random(path: Path, size: int) -> None:
    chunk = 10**6
    with path.open("wb") as file:
        for offset in range(0, size, chunk):
            file.write(os.urandom(min(chunk, size - offset)))


def _check_size(path: Path) -> None:
    size = path.stat().st_size if path.exists() else None
    if size != SIZE:
        raise RuntimeError(f"{path} holds {size} bytes after the transfer, not {SIZE}")


def _which(program: str) -> str:
    found = shutil.which(program)
    if found is None:
        raise RuntimeError(f"{program} not found: install OpenSSH's client")
    return found


# -- the report ---------------------------------------------------------------


def _report(
    repeat: int,
    only: str,
    rtt_ms: float,
    load: tuple[float, float],
    server: SshServer,
    sections: Sequence[Section],
    checks: Sequence[Check],
) -> str:
    command = "inv bench" + (f" --repeat {repeat}" if repeat != DEFAULT_REPEAT else "")
    command += f" --only {only}" if set(only) != set(SECTIONS) else ""
    command += f" --rtt {rtt_ms:g}" if rtt_ms else ""
    link = (
        f"through a relay adding {rtt_ms / 2:g} ms each way ({rtt_ms:g} ms round trip,"
        " `fabric_mux.testing.LatencyRelay`)"
        if rtt_ms
        else "over loopback"
    )
    lines = [
        f"## fabric-mux benchmark, {f'{rtt_ms:g} ms round trip' if rtt_ms else 'loopback'}",
        "",
        f"- Link: {link}",
        f"- Machine: {_machine()}",
        f"- Software: {_software()}",
        f"- Server: a throwaway sshd on 127.0.0.1 (`fabric_mux.testing.ssh_server`),"
        f" logging in as `{server.user}` (bash with a light start-up)",
        f"- Method: `{command}`, {time.strftime('%Y-%m-%d %H:%M %Z')}; medians of n"
        " interleaved rounds; logins counted in sshd's log, per sample; fabric_mux"
        " byte-compiled first, as an install leaves it; load average"
        f" {load[0]:.2f} at the start, {load[1]:.2f} at the end",
        "",
        "| test | variant | median | range | n | logins/sample |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for section in sections:
        for index, variant in enumerate(section.variants):
            title = section.title if index == 0 else ""
            lines.append(
                f"| {title} | {variant.label} | {_median(section, variant)}"
                f" | {_range(section, variant)} | {len(variant.samples)} | {_logins(variant)} |"
            )
    lines += ["", "| ratio (of median times) | value | promise |", "| --- | ---: | --- |"]
    for check in checks:
        value = check.value
        shown = "n/a" if value is None else f"{value:.2f}x"
        verdict = ""
        if check.holds is not None:
            held = value is not None and check.holds(value)
            verdict = f"{check.promise}: {'holds' if held else '**does not hold**'}"
        lines.append(f"| {check.label} | {shown} | {verdict} |")
    notes = [note for section in sections for note in section.notes]
    if notes:
        lines += ["", *(f"- {note}" for note in notes)]
    return "\n".join(lines) + "\n"


def _median(section: Section, variant: Variant) -> str:
    median = variant.median
    if median is None:
        return "n/a"
    return f"{_number(section, median)} {'MB/s' if section.size else 'ms'}"


def _range(section: Section, variant: Variant) -> str:
    """Lowest to highest sample, in the median's unit: how much the machine wobbled."""
    if not variant.samples:
        return ""
    fast, slow = min(variant.samples), max(variant.samples)
    low, high = (slow, fast) if section.size else (fast, slow)
    return f"{_number(section, low)}..{_number(section, high)}"


def _number(section: Section, seconds: float) -> str:
    if section.size:
        return f"{section.size / seconds / 10**6:.0f}"
    ms = seconds * 1000
    return f"{ms:.2f}" if ms < 10 else f"{ms:.1f}" if ms < 100 else f"{ms:.0f}"


def _logins(variant: Variant) -> str:
    if not variant.samples:
        return "-"
    per = variant.logins / len(variant.samples)
    return f"{per:g}" if per == int(per) else f"{per:.2f}"


def _output(argv: list[str]) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    except OSError:
        return "?"
    return (proc.stdout or proc.stderr).strip() or "?"


def _machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{_output(['uname', '-srm'])}, {cpu}, {_output(['nproc'])} CPUs"


def _software() -> str:
    repo = Path(__file__).resolve().parent.parent
    commit = _output(["git", "-C", str(repo), "describe", "--always", "--dirty"])
    return ", ".join(
        [
            _output(["ssh", "-V"]),
            f"Python {platform.python_version()}",
            *(f"{name} {version(name)}" for name in ("fabric", "paramiko", "invoke")),
            f"fabric-mux {fabric_mux.__version__} ({commit})",
        ]
    )
