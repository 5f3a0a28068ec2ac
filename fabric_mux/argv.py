"""Pure functions: a connection's settings in, an ``ssh`` argv out. No I/O here."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import NamedTuple

__all__ = [
    "SshTarget",
    "config_query_argv",
    "connect_kwargs_options",
    "control_socket_name",
    "fallback_options",
    "master_argv",
    "parse_resolved_config",
    "persist_value",
    "quote_option_value",
    "ssh_options",
    "target_args",
]

#: Bytes the master appends to ControlPath while binding (".XXXXXXXXXXXXXXXX")
#: plus the 108-byte sockaddr_un limit on Linux, with room for the NUL.
MAX_CONTROL_PATH = 90


class SshTarget(NamedTuple):
    """Everything the user gave that decides where and how ``ssh`` connects.

    ``destination`` is the host as the user wrote it (an ssh_config alias is
    passed through as is, so OpenSSH applies the user's own ssh_config).
    """

    destination: str
    user: str | None = None
    port: int | None = None
    config_file: str | None = None
    identity_files: tuple[str, ...] = ()
    connect_timeout: int | None = None
    forward_agent: bool = False
    options: tuple[str, ...] = ()


def quote_option_value(value: str) -> str:
    """Quote a value for ssh's option parser, which splits on white space."""
    if '"' in value:
        raise ValueError(f"ssh options cannot carry a double quote: {value!r}")
    return f'"{value}"' if any(ch.isspace() for ch in value) else value


def target_args(target: SshTarget) -> list[str]:
    """The options shared by the master and the config query (destination excluded)."""
    args: list[str] = []
    if target.config_file:
        args += ["-F", target.config_file]
    if target.user:
        args += ["-l", target.user]
    if target.port:
        args += ["-p", str(target.port)]
    for identity in target.identity_files:
        args += ["-i", identity]
    if target.connect_timeout:
        args += ["-o", f"ConnectTimeout={target.connect_timeout}"]
    if target.forward_agent:
        args += ["-o", "ForwardAgent=yes"]
    for option in target.options:
        args += ["-o", option]
    return args


def config_query_argv(ssh: str, target: SshTarget) -> list[str]:
    """``ssh -G``: OpenSSH's own resolution of the target's configuration."""
    return [ssh, "-G", *target_args(target), "--", target.destination]


def parse_resolved_config(text: str) -> dict[str, str]:
    """``ssh -G`` output as a dict (first value of each keyword, as ssh uses)."""
    settings: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key:
            settings.setdefault(key.lower(), value)
    return settings


#: ``ssh -G`` keywords that decide where a session lands and as whom.
ROUTE_KEYS = frozenset(
    {
        "user",
        "hostname",
        "port",
        "proxyjump",
        "proxycommand",
        "identityfile",
        "certificatefile",
        "hostkeyalias",
        "forwardagent",
    }
)


def control_socket_name(resolved_config: str) -> str:
    """A short name that changes whenever anything deciding the route changes.

    The input is ``ssh -G``'s output, so the name follows OpenSSH's own view of
    the route (HostName, Port, User, ProxyJump, ProxyCommand, identities) after
    the user's ssh_config, Match blocks and our options. Timeouts and other
    settings that do not move a session elsewhere are left out, so they do not
    split one route over several masters.
    """
    route = sorted(
        line
        for line in resolved_config.splitlines()
        if line.partition(" ")[0].lower() in ROUTE_KEYS
    )
    return hashlib.sha256("\n".join(route).encode("utf-8")).hexdigest()[:20]


def persist_value(persist: object) -> str:
    """``mux.persist`` as a ControlPersist value.

    ``0``/``False``/``"no"`` keep the master only while this process holds it:
    it gets one second of grace after its last control connection closes, so
    even a crashed process leaves nothing running.
    """
    if persist is True:
        return "yes"
    if persist is None or persist is False or persist == 0:
        return "1"
    if isinstance(persist, str):
        text = persist.strip().lower()
        if text in ("0", "no", "false", "off", ""):
            return "1"
        if text in ("yes", "true", "on"):
            return "yes"
        return text
    return str(int(persist))  # type: ignore[call-overload]


def fallback_options(
    resolved: Mapping[str, str],
    server_alive: tuple[int, int] | None,
    connect_timeout: int | None,
) -> list[str]:
    """The master's own options, decided against ``resolved`` (parsed ``ssh -G``).

    Keep-alives make a frozen server fail the master within interval x count
    seconds instead of hanging every session; they are always set when asked
    for (Debian's ssh quietly defaults to 300 s in batch mode). A connect
    timeout bounds a start against an unreachable host, where the user's
    ssh_config sets none.
    """
    options: list[str] = []
    if server_alive:
        interval, count = server_alive
        options += [f"ServerAliveInterval={interval}", f"ServerAliveCountMax={count}"]
    if connect_timeout and resolved.get("connecttimeout", "none") == "none":
        options.append(f"ConnectTimeout={connect_timeout}")
    return options


def master_argv(
    ssh: str,
    target: SshTarget,
    control_path: str,
    persist: str,
    extra_options: Sequence[str] = (),
) -> list[str]:
    """The argv that starts a backgrounded master (``-f``, ``ControlPersist``) for ``target``."""
    # ssh expands %-tokens in ControlPath: a literal % must be doubled.
    path = quote_option_value(control_path.replace("%", "%%"))
    argv = [ssh, "-M", "-N", "-f", "-o", "ControlMaster=yes", "-o", f"ControlPath={path}"]
    argv += ["-o", f"ControlPersist={persist}"]
    # The master forwards a session's environment only for names matching its
    # SendEnv; sessions ask for nothing unless the caller set env (the server's
    # AcceptEnv still decides), so let every name through.
    argv += ["-o", "SendEnv=*"]
    for option in extra_options:
        argv += ["-o", option]
    return [*argv, *target_args(target), "--", target.destination]


#: paramiko ``connect()`` arguments OpenSSH cannot take from us.
UNSUPPORTED_CONNECT_KWARGS = ("pkey", "sock", "transport_factory", "auth_strategy")


def connect_kwargs_options(connect_kwargs: Mapping[str, object]) -> tuple[str, ...]:
    """The ssh options for what Fabric's ``connect_kwargs`` say beyond keys and timeouts.

    :raises ValueError: for what only paramiko can do (an in-memory ``pkey``,
        a ready ``sock``): silently dropping them would log in differently.
    """
    unsupported = [key for key in UNSUPPORTED_CONNECT_KWARGS if connect_kwargs.get(key)]
    if unsupported:
        raise ValueError(
            f"connect_kwargs {', '.join(unsupported)} cannot be handed to OpenSSH: "
            "use key_filename (or ssh_config's IdentityFile) and gateway= instead"
        )
    options = []
    if connect_kwargs.get("allow_agent") is False:
        options.append("IdentityAgent=none")
    if connect_kwargs.get("compress"):
        options.append("Compression=yes")
    if connect_kwargs.get("gss_auth"):
        options.append("GSSAPIAuthentication=yes")
    if connect_kwargs.get("gss_deleg_creds"):
        options.append("GSSAPIDelegateCredentials=yes")
    return tuple(options)


def ssh_options(values: Sequence[str] | str | None) -> tuple[str, ...]:
    """``mux.ssh_options`` as a tuple of ``Key=value`` strings."""
    if not values:
        return ()
    if isinstance(values, str):
        return (values,)
    return tuple(str(value) for value in values)
