"""``inv bench`` section d: many threads running commands on one host."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import fabric
from fabric import Connection

from fabric_mux import MuxConnection

from .common import (
    control_dir,
    timed,
)
from .core import Bench, forget_resolved_configs
from .model import Check, Section, Variant

THREADS = 16
THREAD_COMMANDS = 5


def run(bench: Bench, repeat: int) -> tuple[list[Section], list[Check]]:
    def stock() -> float:
        return timed(lambda: _in_threads(Connection, bench.stock_config, bench.alias))

    def mux() -> float:
        with ExitStack() as local:
            config = bench._mux_config(control_dir(local))
            forget_resolved_configs()
            return timed(lambda: _in_threads(MuxConnection, config, bench.alias))

    variants = [
        Variant("stock Fabric, a `Connection` a thread", stock),
        Variant("fabric-mux, a `MuxConnection` a thread, cold master", mux),
    ]
    title = f"d. {THREADS} threads x {THREAD_COMMANDS} `run('true')`, one host"
    section = Section("d", title, variants)
    bench.measure(section, repeat)
    s, m = variants
    return [section], [
        Check("d. stock ÷ mux", s, m),
    ]


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
