"""From Fabric's settings to what ``ssh`` is told (an :class:`~fabric_mux.argv.SshTarget`).

Whatever Fabric would only read from ssh_config is left to OpenSSH, which reads
the same file (and understands all of it: Match, certificates...); Fabric's own
choices (``user``, ``port``, ``forward_agent``, keys, timeouts, ``gateway=False``)
are added on the command line, as Fabric would apply them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from fabric.util import get_local_user

from .argv import SshTarget, connect_kwargs_options
from .config import MuxSettings
from .upstream import runtime_ssh_path

__all__ = ["Explicit", "Secrets", "fabric_target", "merged_connect_kwargs"]


class Secrets(NamedTuple):
    """What Fabric was given to answer a route's own login prompts."""

    password: str | None = None
    passphrase: str | None = None

    @classmethod
    def of(cls, connect_kwargs: Mapping[str, Any]) -> Secrets:
        password, passphrase = connect_kwargs.get("password"), connect_kwargs.get("passphrase")
        return cls(str(password) if password else None, str(passphrase) if passphrase else None)


class Explicit(NamedTuple):
    """What the caller chose for a connection (None: ssh_config and the config decide)."""

    user: str | None = None
    port: int | None = None
    forward_agent: bool | None = None
    gateway: Any = None
    connect_timeout: int | None = None
    #: A ``HostName`` the caller assigned (``c.host = ...``).
    hostname: str | None = None


@functools.lru_cache(maxsize=1)
def _local_user() -> str:
    """Who we are, looked up once (it reads /etc/passwd, which may be out of reach
    later: no descriptor left)."""
    return str(get_local_user())


def merged_connect_kwargs(
    from_config: Mapping[str, Any], given: Mapping[str, Any] | None, *more_keys: Any
) -> dict[str, Any]:
    """Fabric's merge of ``connect_kwargs``: the given ones (else the config's), with
    every ``key_filename`` of the config, the given ones and ``more_keys``."""
    given = dict(given or {})
    from_config = dict(from_config)
    merged = dict(given or from_config)
    keys: list[str] = []
    for value in (from_config.get("key_filename", []), given.get("key_filename", []), *more_keys):
        keys.extend([value] if isinstance(value, str) else value)
    if keys:
        merged["key_filename"] = keys
    return merged


def fabric_target(
    host: str,
    config: Any,
    explicit: Explicit,
    connect_kwargs: Mapping[str, Any],
    ssh_config: Callable[[], Mapping[str, Any]],
    settings: MuxSettings,
    defaults: Any = None,
) -> SshTarget:
    """What a connection to ``host`` tells ``ssh``: the alias plus what Fabric set.

    Whatever Fabric would only read from ssh_config is left to OpenSSH, which
    reads the same file (and understands all of it: Match, certificates...).
    Fabric's own config values (``user``, ``port``, ``forward_agent``) come
    after ssh_config, as in Fabric: only to find whether ssh_config sets them
    is paramiko's lookup (``ssh_config()``) needed. ``defaults`` are the
    config's user, port and forward_agent as a connection read them when made
    (else read from ``config`` now).
    """
    if defaults is None:
        user_default, port_default, agent_default = config.user, config.port, config.forward_agent
    else:
        user_default, port_default, agent_default = (
            defaults.user,
            defaults.port,
            defaults.forward_agent,
        )
    user = explicit.user
    if user is None and user_default != _local_user() and "user" not in ssh_config():
        user = user_default
    port = explicit.port
    if port is None and int(port_default) != 22 and "port" not in ssh_config():
        port = port_default
    forward_agent = explicit.forward_agent
    if forward_agent is None and agent_default and "forwardagent" not in ssh_config():
        forward_agent = True
    keys = connect_kwargs.get("key_filename") or []
    keys = [keys] if isinstance(keys, str) else list(keys)
    if keys:
        # ssh reads ssh_config's own identities; a stock Connection made with
        # this config has copied them into its connect_kwargs: leave those.
        from_ssh_config = set(ssh_config().get("identityfile", []))
        keys = [key for key in keys if key not in from_ssh_config]
    timeout = explicit.connect_timeout or connect_kwargs.get("timeout")
    options: tuple[str, ...] = ()
    if explicit.hostname is not None:
        options += (f"HostName={explicit.hostname}",)
    if forward_agent is not None:
        options += (f"ForwardAgent={'yes' if forward_agent else 'no'}",)
    if explicit.gateway is False:  # no ProxyJump or ProxyCommand from ssh_config
        options += ("ProxyCommand=none",)
    return SshTarget(
        destination=host,
        user=user,
        port=int(port) if port is not None else None,
        config_file=runtime_ssh_path(config) or config.ssh_config_path,
        identity_files=tuple(str(key) for key in keys),
        connect_timeout=int(timeout) if timeout else None,
        options=options + connect_kwargs_options(connect_kwargs) + settings.ssh_options,
    )
