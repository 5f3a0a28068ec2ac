"""Where a route lands and what a running master connects to, as ``ssh -G``
tells (see :mod:`fabric_mux.served` for the rule): a route's
:class:`~fabric_mux.served.Endpoint` with its jump hosts resolved, and a master's,
learned from its command line."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from .argv import SshTarget, parse_resolved_config
from .connected import Peer, transport_peer
from .exceptions import MuxError
from .hops import jump_hops
from .peers import process_argv, process_cwd, process_started
from .resolve import changed_since, resolve_config
from .served import (
    TITLE,
    Endpoint,
    Served,
    config_file_of,
    rewritten_title,
    send_env_of,
    ssh_command_words,
)

__all__ = ["endpoint_of", "learn", "not_connected"]

log = logging.getLogger("fabric_mux")

#: Seconds of doubt in a process's start time (Linux gives the boot time to the second).
_CLOCK_SLACK = 1.0
#: Jump hosts of jump hosts followed, at most.
_MOST_HOPS = 8


def endpoint_of(
    ssh: str,
    resolved: str,
    config_file: str | None,
    alias: str,
    keep_in: Path | None,
    depth: int = 0,
) -> Endpoint:
    """The :class:`~fabric_mux.served.Endpoint` of ``alias``'s ``ssh -G``
    answer, each ProxyJump hop resolved as that ssh resolves it (with its
    ``-F`` file), hops of hops too (a ProxyJump naming the host itself is
    ignored, as ssh does). ``keep_in``: where ``ssh -G`` answers are kept."""
    view = parse_resolved_config(resolved)
    hops = []
    for jump in jump_hops(view.get("proxyjump", "none")):
        if jump.host == alias or depth >= _MOST_HOPS:
            continue
        hop = SshTarget(jump.host, jump.user, jump.port, config_file)
        text = resolve_config(ssh, hop, keep_in=keep_in)
        hops.append(endpoint_of(ssh, text, config_file, jump.host, keep_in, depth + 1))
    return Endpoint.of(view, hops)


def learn(
    ssh: str, pid: int, user_path: Callable[[], str], keep_in: Path | None, host: str
) -> Served:
    """What master ``pid`` serves, from ``ssh -G`` of its command line; ``user_path()``:
    the user's own control path of the route asking (``host``'s), asked only if needed."""
    argv = process_argv(pid)
    if argv is not None and rewritten_title(argv, user_path()):
        return Served(None, None, TITLE, _transport(pid))
    words = ssh_command_words(argv, process_cwd(pid)) if argv else None
    if words is None:
        return Served(None, None, "its command line cannot be read")
    target = SshTarget("", words=words)
    try:
        resolved = resolve_config(ssh, target, keep_in=keep_in)
    except MuxError as exc:
        log.debug("%s: cannot read what master %d connects to: %s", host, pid, exc)
        return Served(None, None, "ssh -G cannot read its command line")
    started = process_started(pid)
    changed = changed_since(ssh, target, started + _CLOCK_SLACK) if started else None
    if changed is None:
        # A Match exec's command may have answered otherwise when it started
        # (another environment, another network): what it chose is not known.
        return Served(None, None, "its ssh_config runs a command (Match exec) to choose")
    if changed:
        # Its ssh read its ssh_config when it started: another version then.
        # (A file changed within the slack of the start's time, which /proc
        # gives to the second, counts as read: a change minutes later, as an
        # edit after the morning's master is, does not.)
        return Served(None, None, "its ssh_config changed since it started")
    destination = parse_resolved_config(resolved).get("host", "")
    endpoint = endpoint_of(ssh, resolved, config_file_of(words), destination, keep_in)
    if endpoint.shell:
        # Its ProxyCommand's shell expanded those words in its environment then.
        return Served(None, None, "a shell expanded its ProxyCommand's $ words, unseen")
    return Served(endpoint, send_env_of(resolved), peers=_transport(pid))


def _transport(pid: int) -> frozenset[Peer]:
    """Where master ``pid``'s transport leads, if it is a TCP connection (unread,
    or pipes to a proxy: nothing proves where it went)."""
    peer = transport_peer(pid)
    return frozenset([peer] if peer else [])


def not_connected(
    served: Served, mine: Endpoint, addresses: Callable[[], frozenset[Peer]]
) -> str | None:
    """None if the transport of a master said to serve the direct route to
    ``mine`` is a TCP connection to an address of its host (``addresses()``) at
    its port, or this process started it for that route; else why that route
    cannot ride it."""
    if served.peers is None or served.peers & addresses():
        return None
    return (
        f"is not connected to {mine.hostname} port {mine.port} itself (it went "
        "through a proxy or jump host of its own, or elsewhere, or cannot be looked at)"
    )
