"""Pure functions: a connection's settings in, an ``ssh`` argv out. No I/O here."""

from __future__ import annotations

import functools
import hashlib
import re
import secrets
import sys
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import NamedTuple

__all__ = [
    "MAX_CONTROL_PATH",
    "SHELL_RUN",
    "THIS_RUN_ONLY",
    "SshTarget",
    "config_query_argv",
    "connect_kwargs_options",
    "control_path_option",
    "control_socket_name",
    "expand_path",
    "fallback_options",
    "is_control_socket_name",
    "master_argv",
    "master_identity",
    "max_control_path",
    "parse_resolved_config",
    "persist_value",
    "quote_option_value",
    "resolved_values",
    "ssh_options",
    "target_args",
    "this_run_only",
]


def max_control_path(platform: str = sys.platform) -> int:
    """The longest ControlPath that ssh can bind on ``platform``: a UNIX socket's
    path holds 108 bytes on Linux, 104 on macOS and the BSDs, with the NUL; the
    master binds at the path plus ``.XXXXXXXXXXXXXXXX`` and renames it after."""
    sun_path = 108 if platform.startswith("linux") else 104
    return sun_path - len(".XXXXXXXXXXXXXXXX") - 1


#: :func:`max_control_path` of this system.
MAX_CONTROL_PATH = max_control_path()


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
    options: tuple[str, ...] = ()
    #: Another ssh command line's words as they stand (its options and destination,
    #: in their order: the first value of each keyword wins), for ``ssh -G`` to
    #: read as that command's ssh did; the fields above are then unused.
    words: tuple[str, ...] = ()


def quote_option_value(value: str) -> str:
    """Quote a value for ssh's option parser, which splits on white space and, from
    8.7, takes a single quote as the start of a quoted word. Between double quotes
    both are plain text in every version; a double quote itself cannot be carried
    (before 8.7 no escape works there): mux settings refuse one (BadConfig)."""
    if '"' in value:
        raise ValueError(f"ssh options cannot carry a double quote: {value!r}")
    return f'"{value}"' if any(ch.isspace() or ch == "'" for ch in value) else value


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
    for option in target.options:
        args += ["-o", option]
    return args


def config_query_argv(ssh: str, target: SshTarget) -> list[str]:
    """``ssh -G``: OpenSSH's own resolution of the target's configuration."""
    if target.words:
        return [ssh, "-G", *target.words]
    return [ssh, "-G", *target_args(target), "--", target.destination]


@functools.lru_cache(maxsize=256)
def parse_resolved_config(text: str) -> Mapping[str, str]:
    """``ssh -G`` output as a mapping (first value of each keyword, as ssh uses).

    Read-only, and parsed once a text: a route, its master and its socket's
    name all read the same answer.
    """
    settings: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key:
            settings.setdefault(key.lower(), value)
    return MappingProxyType(settings)


#: ``ssh -G`` keywords left out of a master's identity, because none of them can
#: change where a session lands, as whom, or how the server is verified. Every
#: other keyword counts: host keys and known-hosts files, authentication,
#: identities, crypto, proxies, forwarding, environment.
NOT_IDENTITY = frozenset(
    {
        # How long to wait and how often to probe: a slow link, not another server.
        "connecttimeout",
        "connectionattempts",
        "serveraliveinterval",
        "serveralivecountmax",
        "tcpkeepalive",
        # Multiplexing itself: the very master being chosen.
        "controlmaster",
        "controlpath",
        "controlpersist",
        # What ssh prints about itself.
        "loglevel",
        "logverbose",
        "syslogfacility",
        "visualhostkey",
        # The shape of one client's own session: the master runs none (-N), and
        # each session brings its own command, tty and escape character.
        "escapechar",
        "enableescapecommandline",
        "requesttty",
        "sessiontype",
        "stdinnull",
        "forkafterauthentication",
        "remotecommand",
        # QoS marks on the packets.
        "ipqos",
        # How often to ask for a password; the master sets its own.
        "numberofpasswordprompts",
    }
)

_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

#: The ``ssh -G`` keywords whose value ssh runs through a shell: where the route
#: goes (ProxyCommand), how its host key is found (KnownHostsCommand).
SHELL_RUN = ("proxycommand", "knownhostscommand")
#: A variable that shell expands: ``$NAME`` as well as ``${NAME}``.
_SHELL_VARIABLE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)")
#: What that shell makes of words nobody can tell ahead: a command's output
#: (``$(...)``, backquotes), its own pid, a variable named by another's value
#: (``eval nc \${$NAME}``, ``sh -c "nc \${$NAME}"``, bash's ``${!NAME}``).
_SHELL_ONLY = re.compile(r"\$\(|`|\$[$!]|\\\$|\$\{!|(?:^|[\s;&|(])eval(?:\s|$)")
#: The identity line of a route whose shell-run command has such words: its
#: master is this run's (the run's forks share it), never another run's.
THIS_RUN_ONLY = f"this run only {secrets.token_hex(8)}"


def this_run_only(identity: str) -> bool:
    """Whether a master identity (:func:`master_identity`) is this run's only."""
    return THIS_RUN_ONLY in identity.splitlines()


#: Tokens that ssh expands, after ``ssh -G``, to the alias as written: ``%n``,
#: and ``%k`` (HostKeyAlias, else the alias).
_ALIAS_TOKENS = re.compile(r"%[nk]")


def master_identity(resolved_config: str, alias: str, environ: Mapping[str, str]) -> str:
    """What two connections must agree on to share a master: OpenSSH's whole view.

    ``resolved_config`` is ``ssh -G``'s output for the connection, after the
    user's ssh_config, Match blocks and our options. Every line counts, in
    ssh's order (the order of identities is the order they are tried), except
    the keywords in :data:`NOT_IDENTITY`.

    The ``host`` line (the alias as written) is left out, so that several
    aliases of one server with the same settings share one login: once the
    configuration is resolved, OpenSSH verifies and authenticates by HostName
    (or HostKeyAlias), User and the rest, never by the alias. The exception is
    a value holding ``%n`` or ``%k``, which ssh expands to the alias only
    later (an IdentityFile, a KnownHostsCommand): then the alias does change
    what ssh does, and it counts. ``${NAME}`` references are expanded by ssh
    from its environment, so their values count too, as do those of ``$NAME``
    in a command ssh runs through a shell (:data:`SHELL_RUN`: the same
    ProxyCommand text may go elsewhere in another environment); a command's
    output there (``$(...)``) is known to nobody ahead, so such a route's master
    is this run's only (:data:`THIS_RUN_ONLY`). So does the agent's socket when
    the agent is forwarded (sessions get the master's agent).
    """
    text, names = _identity_lines(resolved_config, alias)
    return "\n".join([text, *(f"${{{name}}}={environ.get(name, '')}" for name in names)])


@functools.lru_cache(maxsize=256)
def _identity_lines(resolved_config: str, alias: str) -> tuple[str, tuple[str, ...]]:
    """:func:`master_identity` before the environment: its lines, and the
    variables whose values count (sorted)."""
    lines = [
        line
        for line in resolved_config.splitlines()
        if line and line.partition(" ")[0].lower() not in NOT_IDENTITY | {"host"}
    ]
    text = "\n".join(lines).replace("%%", "")
    if _ALIAS_TOKENS.search(text):
        lines.append(f"host {alias}")
    names = set(_ENV_REFERENCE.findall(text))
    settings = parse_resolved_config(resolved_config)
    for keyword in SHELL_RUN:
        command = settings.get(keyword, "none")
        names.update(_SHELL_VARIABLE.findall(command))
        if _SHELL_ONLY.search(command) and THIS_RUN_ONLY not in lines:
            lines.append(THIS_RUN_ONLY)
    for keyword in ("identityagent", "forwardagent"):
        value = settings.get(keyword, "")
        if value.startswith("$"):
            names.add(value[1:])
    if settings.get("forwardagent", "no") != "no":
        names.add("SSH_AUTH_SOCK")
    return "\n".join(lines), tuple(sorted(names))


def control_socket_name(identity: str) -> str:
    """A short socket name for a master identity (see :func:`master_identity`).

    80 bits of sha256: a collision would need 2**40 routes in one folder.
    """
    return hashlib.sha256(identity.encode("utf-8")).hexdigest()[:20]


_SOCKET_NAME = re.compile(r"[0-9a-f]{20}")


def is_control_socket_name(name: str) -> bool:
    """Whether ``name`` is one :func:`control_socket_name` makes."""
    return bool(_SOCKET_NAME.fullmatch(name))


def resolved_values(resolved_config: str, keyword: str) -> list[str]:
    """Every value ``ssh -G`` printed for ``keyword`` (IdentityFile may repeat)."""
    values = []
    for line in resolved_config.splitlines():
        key, _, value = line.partition(" ")
        if key.lower() == keyword:
            values.append(value)
    return values


def expand_path(value: str, tokens: Mapping[str, str], environ: Mapping[str, str]) -> str | None:
    """A path option as ssh expands it: ``~``, then ``%`` tokens, then ``${NAME}``.

    ``tokens`` maps token letters to values (``d`` the local home...). None
    when the value uses something not given here (``~other``, an unknown
    token, an unset variable): ssh's result cannot be known then.
    """
    if value == "~" or value.startswith("~/"):
        value = tokens["d"] + value[1:]
    elif value.startswith("~"):
        return None
    out: list[str] = []
    letters = iter(value)
    for char in letters:
        if char != "%":
            out.append(char)
            continue
        letter = next(letters, "")
        if letter == "%":
            out.append("%")
        elif letter in tokens:
            out.append(tokens[letter])
        else:
            return None
    expanded = "".join(out)
    for name in _ENV_REFERENCE.findall(expanded):
        if name not in environ:
            return None
    return _ENV_REFERENCE.sub(lambda m: environ[m.group(1)], expanded)


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


def control_path_option(control_path: str) -> str:
    """The ``ControlPath=`` option naming ``control_path`` (how a master's argv says it)."""
    # ssh expands %-tokens in ControlPath: a literal % must be doubled.
    return f"ControlPath={quote_option_value(control_path.replace('%', '%%'))}"


def master_argv(
    ssh: str,
    target: SshTarget,
    control_path: str,
    persist: str,
    extra_options: Sequence[str] = (),
) -> list[str]:
    """The argv that starts a backgrounded master (``-f``, ``ControlPersist``) for ``target``."""
    argv = [
        ssh,
        "-M",
        "-N",
        "-f",
        "-o",
        "ControlMaster=yes",
        "-o",
        control_path_option(control_path),
    ]
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
    """``mux.ssh_options`` as a tuple of ``Key=value`` strings.

    Text (an environment variable's) is one option a line, each as ``ssh -o``
    takes it: a value may hold spaces (``ProxyCommand=ssh -W %h:%p bastion``)
    with no quoting, and a single line is one option, as it always was.
    """
    if not values:
        return ()
    if isinstance(values, str):
        return tuple(line.strip() for line in values.split("\n") if line.strip())
    return tuple(str(value) for value in values)
