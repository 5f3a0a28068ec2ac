"""``inv bench`` section c: `fab -H alias t1..t5` against a warm master."""

from __future__ import annotations

from .common import (
    console_script,
    protocol_session,
    run_quiet,
    scratch,
    timed,
)
from .core import Bench
from .model import Check, Section, Variant

FAB_TASKS = tuple(f"t{n}" for n in range(1, 6))
FAB_RUNS_PER_TASK = 3
FABFILE = f"""\
from fabric import task

for _n in range(1, {len(FAB_TASKS) + 1}):
    def _body(c):
        for _ in range({FAB_RUNS_PER_TASK}):
            c.run("true")
    globals()[f"t{{_n}}"] = task(name=f"t{{_n}}")(_body)
"""


def run(bench: Bench, repeat: int) -> tuple[list[Section], list[Check]]:
    fab = console_script("fab")
    plain = scratch(bench.stack, "fmb-fab-")
    muxed = scratch(bench.stack, "fmb-fabmux-")
    for project in (plain, muxed):
        (project / "fabfile.py").write_text(FABFILE)
    (muxed / "fabric.yaml").write_text(
        f"tasks:\n  executor_class: fabric_mux.MuxExecutor\nmux:\n  control_dir: {bench.warm_dir}\n"
    )
    argv = [fab, "-S", bench.cfg, "-H", bench.alias, *FAB_TASKS]
    path = bench.control_path
    sessions = len(FAB_TASKS) * FAB_RUNS_PER_TASK

    def floor() -> None:
        run_quiet([fab, "-S", bench.cfg, "--list"], cwd=muxed)
        for _ in range(sessions):
            protocol_session(path, "true")

    variants = [
        Variant("stock `fab`", lambda: timed(lambda: run_quiet(argv, cwd=plain))),
        Variant(
            "`fab` + MuxExecutor (fabric.yaml), warm master",
            lambda: timed(lambda: run_quiet(argv, cwd=muxed)),
        ),
        Variant(f"floor: `fab --list` + {sessions} bare protocol sessions", lambda: timed(floor)),
    ]
    tasks = " ".join(FAB_TASKS)
    title = f"c. `fab -H alias {tasks}` ({FAB_RUNS_PER_TASK} `c.run('true')` a task)"
    section = Section("c", title, variants)
    # The first warm-up run also checks that the master it finds is the warm one.
    bench.measure(section, repeat, warmup=1)
    s, m, f = variants
    if bench.rtt_ms:
        return [section], [Check("c. stock ÷ mux", s, m), Check("c. mux ÷ floor", m, f)]
    return [section], [
        Check("c. stock ÷ mux", s, m, "≥ 3.5", lambda v: v >= 3.5),
        Check("c. mux ÷ floor", m, f, "≤ 1.3", lambda v: v <= 1.3),
    ]
