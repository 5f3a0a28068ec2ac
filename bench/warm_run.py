"""``inv bench`` section b: a warm `c.run('true')` on an open connection."""

from __future__ import annotations

from .common import (
    protocol_session,
    run_quiet,
    timed,
)
from .core import Bench
from .model import Check, Section, Variant

#: Section b's commands take milliseconds: it runs this many times more rounds.
WARM_FACTOR = 20
WARMUP = 2


def run(bench: Bench, repeat: int) -> tuple[list[Section], list[Check]]:
    stock, mux, path = bench.warm_stock, bench.warm_mux, bench.control_path
    ssh_s = [bench.ssh, "-F", bench.cfg, "-S", path, bench.alias, "true"]
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
    bench.measure(section, repeat * WARM_FACTOR, warmup=WARMUP)
    s, m, o, p = variants
    if bench.rtt_ms:
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
