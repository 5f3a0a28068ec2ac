"""Gateways: a hop gets a master of its own, and targets behind it connect through it.

Plain OpenSSH ProxyJump would make every target's master log in to the bastion
again (its inner ``ssh -W`` is a fresh client). Here each hop is a
``MuxConnection``; a target's master is given
``ProxyCommand ssh -S HOP_SOCKET -W %h:%p hop``, a stdio forward opened on the
hop's master, so one bastion login serves every host behind it.
"""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING, Any, Union

from fabric import Connection

if TYPE_CHECKING:
    from .connection import MuxConnection

__all__ = ["Route", "as_hop", "hop_errors_path", "jump_hosts", "proxy_command"]

#: How a target is reached: directly (None), through a ProxyCommand string, or
#: through a hop that has a master of its own.
Route = Union[None, str, "MuxConnection"]


def jump_hosts(proxyjump: str) -> list[str]:
    """The hops of a ProxyJump value, first hop first (``ssh://`` prefixes dropped)."""
    hops = []
    for item in proxyjump.split(","):
        hop = item.strip()
        if hop.startswith("ssh://"):
            hop = hop[len("ssh://") :].rstrip("/")
        if hop:
            hops.append(hop)
    return hops


def hop_errors_path(hop_control_path: str) -> str:
    """Where the stdio forwards through a hop write their errors.

    ssh sends a ProxyCommand's stderr to /dev/null under ControlPersist, and
    that is where a refusal would say which hop failed: so it goes here.
    """
    return hop_control_path + ".err"


def proxy_command(ssh: str, hop: str, hop_control_path: str) -> str:
    """The ProxyCommand that reaches ``%h:%p`` through the master of ``hop``.

    OpenSSH expands ``%h``/``%p`` to the target's own HostName and Port
    (bracketed, as OpenSSH's own ProxyJump does, so IPv6 addresses work). The
    client reads no ssh_config and has ``ProxyCommand=false``: if the hop's
    master is gone it fails, instead of quietly logging in to the hop again.
    Its log level is set because ``-W`` is quiet by default.
    """

    def quoted(text: str) -> str:
        # Runs through the user's shell, after ssh's own %-expansion.
        return shlex.quote(text).replace("%", "%%")

    return (
        f"{quoted(ssh)} -F /dev/null -o ControlMaster=no -o ProxyCommand=false "
        f"-o LogLevel=ERROR -S {quoted(hop_control_path)} -W '[%h]:%p' {quoted(hop)} "
        f"2>>{quoted(hop_errors_path(hop_control_path))}"
    )


def as_hop(gateway: Any, config: Any, cls: type[MuxConnection]) -> MuxConnection:
    """``gateway`` (a Connection of either kind) as a ``MuxConnection`` hop."""
    if isinstance(gateway, cls):
        return gateway
    if not isinstance(gateway, Connection):
        raise TypeError(
            f"a gateway is a Connection, a ProxyCommand string or False, not {gateway!r}"
        )
    return cls(
        gateway.original_host,
        user=gateway.user,
        port=gateway.port,
        config=gateway.config or config,
        gateway=gateway.gateway,
        forward_agent=gateway.forward_agent,
        connect_timeout=gateway.connect_timeout,
        connect_kwargs=gateway.connect_kwargs,
    )
