"""What the bench sections share: the server, warm connections, how samples are taken."""

from __future__ import annotations

import functools
import shutil
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

import fabric
from fabric import Connection

from fabric_mux import MuxConnection
from fabric_mux import resolve as mux_resolve
from fabric_mux.testing import SshServer

from .common import control_dir
from .model import Section, Variant

__all__ = ["DEFAULT_REPEAT", "Bench", "forget_resolved_configs", "which"]

#: Rounds per measurement: the whole bench then takes about a minute here (2 cores).
DEFAULT_REPEAT = 7


class Bench:
    """The server, the warm connections and the folders that the sections share."""

    def __init__(self, stack: ExitStack, server: SshServer, rtt_ms: float = 0) -> None:
        self.stack = stack
        self.server = server
        #: The round trip the relay adds (0: loopback); promises differ by it.
        self.rtt_ms = rtt_ms
        self.alias = server.alias
        self.cfg = str(server.ssh_config)
        self.ssh = which("ssh")
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

    def measure(self, section: Section, rounds: int, warmup: int = 0) -> None:
        variants = section.variants
        print(f"bench: {section.title} ({rounds} rounds)", file=sys.stderr, flush=True)
        for _ in range(warmup):
            for variant in variants:
                self.sample(variant, keep=False)
        for index in range(rounds):
            shift = index % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                self.sample(variant, keep=True)

    def sample(self, variant: Variant, keep: bool, server: SshServer | None = None) -> None:
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


def forget_resolved_configs() -> None:
    # A new process runs `ssh -G` once per route: a cold row should pay for it too.
    mux_resolve.forget()


def which(program: str) -> str:
    found = shutil.which(program)
    if found is None:
        raise RuntimeError(f"{program} not found: install OpenSSH's client")
    return found
