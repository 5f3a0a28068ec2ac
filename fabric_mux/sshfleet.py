"""Fleets of throwaway servers in one ssh_config, maybe behind a bastion, as a
sysadmin's ``~/.ssh/config`` names a fleet (see :mod:`fabric_mux.testing`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import fabric

from .sshd import SshServer, ssh_server
from .sshdconfig import config_path

__all__ = ["Fleet", "ssh_fleet"]


class Fleet(NamedTuple):
    """Several servers in one ssh_config, maybe behind a bastion; see :func:`ssh_fleet`."""

    #: The hosts' aliases: ``host1``, ``host2``...
    hosts: tuple[str, ...]
    #: Their servers, in the same order.
    servers: tuple[SshServer, ...]
    #: The bastion's alias (``bastion``) when the hosts are behind one.
    bastion: str | None
    #: The bastion's server, if any.
    bastion_server: SshServer | None
    #: The ssh_config naming them all, as a ``~/.ssh/config`` would.
    ssh_config: Path

    def fabric_config(self, overrides: dict[str, Any] | None = None) -> fabric.Config:
        """A :class:`fabric.Config` that reads ``ssh_config`` and nothing else."""
        return fabric.Config(runtime_ssh_path=str(self.ssh_config), overrides=overrides or {})

    def logins(self) -> dict[str, int]:
        """Logins so far, by alias (the bastion's too)."""
        counts = {alias: server.logins() for alias, server in zip(self.hosts, self.servers)}
        if self.bastion and self.bastion_server:
            counts[self.bastion] = self.bastion_server.logins()
        return counts


@contextmanager
def ssh_fleet(
    directory: Path,
    count: int,
    *,
    bastion: bool = False,
    user: str | None = None,
    latency_ms: float | None = None,
) -> Iterator[Fleet]:
    """``count`` throwaway servers (``host1``...), optionally behind a bastion, in one
    ssh_config, as a sysadmin's ``~/.ssh/config`` names a fleet.

    With ``bastion``, every host is reached with ``ProxyJump bastion``, and only
    the bastion is reachable directly (the hosts still listen on 127.0.0.1,
    but the config goes through the bastion). ``latency_ms`` puts each server
    behind a :class:`LatencyRelay` of its own.
    """
    directory = directory.absolute()
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)  # the servers' accounts reach their authorized_keys through it
    with contextlib.ExitStack() as stack:

        def start(name: str) -> SshServer:
            folder = directory / name
            return stack.enter_context(
                ssh_server(folder, user=user, aliases=(name,), latency_ms=latency_ms)
            )

        servers = tuple(start(f"host{n}") for n in range(1, count + 1))
        jump = start("bastion") if bastion else None
        everyone = (*servers, *([jump] if jump else []))
        known = directory / "known_hosts"
        known.write_text("".join(server.known_hosts.read_text() for server in everyone))
        blocks = []
        for server in everyone:
            block = server.ssh_config.read_text().split("Host *")[0]
            if jump is not None and server is not jump:
                block += "    ProxyJump bastion\n"
            blocks.append(block)
        common = (
            "Host *\n"
            + "".join(f"    IdentityFile {config_path(s.client_key)}\n" for s in everyone)
            + "    IdentitiesOnly yes\n"
            f"    UserKnownHostsFile {config_path(known)}\n"
            "    GlobalKnownHostsFile /dev/null\n"
            "    StrictHostKeyChecking yes\n"
            "    BatchMode yes\n"
        )
        ssh_config = directory / "ssh_config"
        ssh_config.write_text("".join(blocks) + common)
        yield Fleet(
            hosts=tuple(s.alias for s in servers),
            servers=servers,
            bastion=jump.alias if jump else None,
            bastion_server=jump,
            ssh_config=ssh_config,
        )
