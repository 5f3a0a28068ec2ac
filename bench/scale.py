"""``inv bench`` section j: one run over 50 to 500 hosts, stock against mux groups."""

from __future__ import annotations

import os
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import fabric
from fabric import ThreadingGroup

from fabric_mux.group import MuxThreadingGroup
from fabric_mux.testing import SshServer

from .common import (
    control_dir,
    light_server,
    memory,
    reap_orphans,
    run_quiet,
    timed,
)
from .core import Bench, forget_resolved_configs
from .model import Check, Section, Variant

#: Section j: hosts of one run (aliases of one sshd, each a route of its own).
SCALE = (50, 200, 500)
_CLASSIC_KEX = "KexAlgorithms=curve25519-sha256"
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


def run(bench: Bench, repeat: int) -> tuple[list[Section], list[Check]]:
    # A server of its own: 500 logins at once need more than MaxStartups 100.
    server = light_server(bench.stack, "fmb-scale-", bench.rtt_ms / 2 or None, ["MaxStartups 2000"])
    sections: list[Section] = []
    checks: list[Check] = []
    for count in SCALE:
        hosts = server.routes(count, prefix=f"s{count}-")
        # Each size from a clean slate: the last size's masters stopped and reaped.
        with ExitStack() as rows:
            sections.append(_scale(bench, rows, server, hosts, checks))
        reap_orphans()
    return sections, checks


def _scale(
    bench: Bench, rows: ExitStack, server: SshServer, hosts: list[str], checks: list[Check]
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
            forget_resolved_configs()
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
        bench.sample(variant, keep=True, server=server)
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
