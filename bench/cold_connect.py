"""``inv bench`` section a: cold connect: a new connection and one `true`."""

from __future__ import annotations

import time
from contextlib import ExitStack

from fabric import Connection

from fabric_mux import MuxConnection

from .common import (
    control_dir,
    run_quiet,
    timed,
)
from .core import Bench, forget_resolved_configs
from .model import Check, Section, Variant

_CLASSIC_KEX = "KexAlgorithms=curve25519-sha256"


def run(bench: Bench, repeat: int) -> tuple[list[Section], list[Check]]:
    def stock() -> float:
        start = time.perf_counter()
        connection = Connection(bench.alias, config=bench.stock_config)
        try:
            connection.run("true", hide=True)
            return time.perf_counter() - start
        finally:
            connection.close()

    def mux(*ssh_options: str) -> float:
        with ExitStack() as local:
            config = bench._mux_config(control_dir(local), ssh_options)
            forget_resolved_configs()
            start = time.perf_counter()
            connection = MuxConnection(bench.alias, config=config)
            try:
                connection.run("true", hide=True)
                return time.perf_counter() - start
            finally:
                connection.close()

    def raw() -> float:
        return timed(lambda: run_quiet([bench.ssh, "-F", bench.cfg, bench.alias, "true"]))

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
    bench.measure(section, repeat)
    s, m, r, k = variants
    return [section], [
        Check("a. stock ÷ mux (cold)", s, m),
        Check("a. stock ÷ mux with paramiko's kex (cold)", s, k),
        Check("a. mux ÷ raw ssh (cold)", m, r),
    ]
