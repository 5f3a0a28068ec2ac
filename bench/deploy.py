"""``inv bench`` section h: a cold, serial `fab` deploy over several hosts."""

from __future__ import annotations

import os
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
#: Section h: hosts of a cold fab run, and what its task does on each.
FLEET = 5
DEPLOY_RUNS = 3
DEPLOY_FABFILE = f"""\
from fabric import task

@task
def deploy(c):
    for _ in range({DEPLOY_RUNS}):
        c.run("true")
    c.put("payload.bin", "fmux-bench-payload.bin")
"""


def run(bench: Bench, repeat: int) -> tuple[list[Section], list[Check]]:
    fab = console_script("fab")
    hosts = bench.server.routes(FLEET, prefix="deploy")
    plain = scratch(bench.stack, "fmb-deploy-")
    muxed = scratch(bench.stack, "fmb-deploymux-")
    for project in (plain, muxed):
        (project / "fabfile.py").write_text(DEPLOY_FABFILE)
        (project / "payload.bin").write_bytes(os.urandom(SMALL))
    warm_dir = control_dir(bench.stack)

    def use(folder: Path) -> None:
        (muxed / "fabric.yaml").write_text(
            f"tasks:\n  executor_class: fabric_mux.MuxExecutor\nmux:\n  control_dir: {folder}\n"
        )

    argv = [fab, "-S", bench.cfg, "-H", ",".join(hosts), "deploy"]

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
    bench.measure(section, repeat, warmup=1)
    s, c, w = variants
    if bench.rtt_ms:
        return [section], [
            Check("h. stock ÷ mux, cold", s, c, "≥ 1.5", lambda v: v >= 1.5),
            Check("h. stock ÷ mux, warm", s, w, "≥ 2", lambda v: v >= 2.0),
        ]
    return [section], [Check("h. stock ÷ mux, cold", s, c), Check("h. stock ÷ mux, warm", s, w)]
