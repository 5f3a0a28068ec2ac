"""``inv bench`` section k: a parallel deploy: stock threads against `fabmux -P`."""

from __future__ import annotations

import os
import sys
from contextlib import ExitStack
from pathlib import Path

from .common import (
    console_script,
    control_dir,
    run_quiet,
    scratch,
    timed,
)
from .core import Bench
from .model import Check, Section, Variant

#: Section g: the small transfers' size.
SMALL = 10_000
#: Section k: hosts of a parallel deploy, and what it does on each.
PARALLEL_HOSTS = 10
PARALLEL_RUNS = 5
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


def run(bench: Bench, repeat: int) -> tuple[list[Section], list[Check]]:
    fab, fabmux = console_script("fab"), console_script("fabmux")
    hosts = bench.server.routes(PARALLEL_HOSTS, prefix="par")
    plain = scratch(bench.stack, "fmb-par-")
    muxed = scratch(bench.stack, "fmb-parmux-")
    for project in (plain, muxed):
        (project / "fabfile.py").write_text(PARALLEL_FABFILE)
        (project / "payload.bin").write_bytes(os.urandom(SMALL))
        (project / "back").mkdir()
    warm_dir = control_dir(bench.stack)

    def use(folder: Path) -> None:
        (muxed / "fabric.yaml").write_text(
            f"tasks:\n  executor_class: fabric_mux.MuxExecutor\nmux:\n  control_dir: {folder}\n"
        )

    host_list = ",".join(hosts)

    def serial() -> float:
        return timed(
            lambda: run_quiet([fab, "-S", bench.cfg, "-H", host_list, "deploy"], cwd=plain)
        )

    def threads() -> float:
        argv = [sys.executable, "-c", THREADED_DEPLOY, bench.cfg, host_list]
        return timed(lambda: run_quiet(argv, cwd=plain))

    def parallel(folder: Path | None) -> float:
        with ExitStack() as local:
            use(folder or control_dir(local))
            argv = [fabmux, "-S", bench.cfg, "-H", host_list, "-P", "deploy"]
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
    bench.measure(section, max(1, repeat // 2), warmup=1)
    s, t, c, w = variants
    promise_cold = ("≥ 1", lambda v: v >= 1.0) if bench.rtt_ms else ("", None)
    promise_warm = ("≤ 0.7", lambda v: v <= 0.7) if bench.rtt_ms else ("", None)
    return [section], [
        Check("k. threads ÷ `fabmux -P` cold", t, c, *promise_cold),
        Check("k. `fabmux -P` warm ÷ threads", w, t, *promise_warm),
        Check("k. serial stock ÷ `fabmux -P` warm", s, w),
    ]
