"""``inv bench`` section f: many hosts (aliases of one sshd), ten group runs."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

import fabric
from fabric import Group, ThreadingGroup

from fabric_mux import MuxConnection

from .common import (
    control_dir,
    memory,
    timed,
)
from .core import DEFAULT_REPEAT, Bench, forget_resolved_configs
from .model import Check, Section, Variant

#: Section f: host aliases of the one sshd, each a route of its own, and runs a group.
HOSTS = 50
HOST_RUNS = 10
#: Section f's samples take seconds: it runs this many rounds for DEFAULT_REPEAT.
HOSTS_ROUNDS = 3


def run(bench: Bench, repeat: int) -> tuple[list[Section], list[Check]]:
    aliases = bench.server.routes(HOSTS, prefix="h")
    ssh_config = bench.cfg
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
            forget_resolved_configs()
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
        bench.measure(section, max(1, round(repeat * HOSTS_ROUNDS / DEFAULT_REPEAT)))
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
