"""Which route a master serves.

A control path that several routes can name (the user's ``ControlPath
~/.ssh/cm-%h`` for two hosts of one address, one ``mux.control_path`` for two
hosts) may hold a master of another route: OpenSSH alone would run the
command there. fabric-mux hands a master only to the route it connects to,
judged by its :class:`Endpoint`: the account, the host name and port ssh
connects to, and the way there (ProxyJump or ProxyCommand).

What a master connects to is learned, in order:

- a master this process started serves the route it was started for;
- a master whose command line stands (one started with ``-f`` or in the
  foreground, fabric-mux's own included): ``ssh -G`` of that command line;
- a master started by an ``ssh`` client with ``ControlMaster auto`` and
  ``ControlPersist`` rewrote its command line (``ssh: PATH [mux]``): then the
  path itself must name the route (:func:`unnamed_part`), as ``%C`` or
  ``%r@%h:%p`` do (and ``%j`` for a route through a jump host).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

from .argv import SshTarget, parse_resolved_config, resolved_values

__all__ = [
    "Endpoint",
    "Served",
    "rewritten_title",
    "sends_env",
    "ssh_command_target",
    "unnamed_part",
]


class Endpoint(NamedTuple):
    """Where a session lands: as whom, on which host name and port, which way."""

    user: str
    hostname: str
    port: str
    #: ``jump HOPS``, ``command COMMAND``, or empty for a direct connection.
    way: str

    @classmethod
    def of(cls, view: Mapping[str, str]) -> Endpoint:
        """The endpoint of a parsed ``ssh -G`` answer."""
        jump = view.get("proxyjump", "none")
        command = view.get("proxycommand", "none")
        way = (
            f"jump {jump}" if jump != "none" else f"command {command}" if command != "none" else ""
        )
        return cls(view.get("user", ""), view.get("hostname", ""), view.get("port", "22"), way)

    def describe(self) -> str:
        """``user@host:port``, and the way there if not direct."""
        where = f"{self.user}@{self.hostname}:{self.port}"
        if self.way.startswith("jump "):
            return f"{where} via {self.way[5:]}"
        if self.way:
            return f"{where} through ProxyCommand {self.way[8:]}"
        return where


class Served(NamedTuple):
    """What a master process was found to serve."""

    #: None: it cannot be told (see :func:`unnamed_part`).
    endpoint: Endpoint | None
    #: The master's SendEnv patterns (ssh passes a session's variables only for
    #: names they match); None: every name (fabric-mux's own masters).
    send_env: tuple[str, ...] | None


#: ssh's options that take an argument (OpenSSH 8.0 to 10.x, ``ssh.c``'s getopt string).
_WITH_ARGUMENT = frozenset("BbcDEeFIiJLlmOoPpQRSWw")
#: Its options that take none.
_FLAGS = frozenset("1246afgkMNnqsTtVvXxYyACGK")


def ssh_command_target(argv: Sequence[str]) -> SshTarget | None:
    """The :class:`SshTarget` whose ``ssh -G`` shows what the ssh command line
    ``argv`` connects to: its destination, and its ``-F``, ``-l``, ``-p``, ``-J``
    and ``-o`` options (the others cannot change the endpoint); None if ``argv``
    is not an ssh command line that names a destination.

    Parsed as ssh parses it: options may come after the destination too, and
    what follows the destination's options is the remote command.
    """
    if not argv or not argv[0].rsplit("/", 1)[-1].startswith("ssh"):
        return None
    words = list(argv[1:])
    destination: str | None = None
    config_file: str | None = None
    user: str | None = None
    port: int | None = None
    options: list[str] = []
    index = 0
    while index < len(words):
        word = words[index]
        index += 1
        if word == "--":
            if destination is None and index < len(words):
                destination = words[index]
            break
        if not word.startswith("-") or word == "-":
            if destination is not None:
                break  # the remote command
            destination = word
            continue
        letters = word[1:]
        while letters:
            letter, letters = letters[0], letters[1:]
            if letter in _FLAGS:
                continue
            if letter not in _WITH_ARGUMENT:
                return None  # not an option ssh knows: not ssh's command line
            if not letters:
                if index >= len(words):
                    return None
                letters, index = words[index], index + 1
            value, letters = letters, ""
            if letter == "F":
                config_file = value
            elif letter == "l":
                user = value
            elif letter == "p":
                if not value.isdigit():
                    return None
                port = int(value)
            elif letter == "J":
                options.append(f"ProxyJump={value}")
            elif letter == "o":
                options.append(value)
    if not destination:
        return None
    return SshTarget(destination, user, port, config_file, options=tuple(options))


def rewritten_title(argv: Sequence[str], path: str) -> bool:
    """Whether ``argv`` is the title a backgrounded ``ControlPersist`` master
    gives itself (``ssh: PATH [mux]``): its own command line is gone."""
    return len(argv) == 1 and argv[0] == f"ssh: {path} [mux]"


def served_by(resolved: str) -> Served:
    """What a master serves, from ``ssh -G`` of its command line."""
    return Served(Endpoint.of(parse_resolved_config(resolved)), send_env_of(resolved))


def send_env_of(resolved: str) -> tuple[str, ...]:
    """The SendEnv patterns of an ``ssh -G`` answer."""
    return tuple(resolved_values(resolved, "sendenv"))


def sends_env(patterns: tuple[str, ...] | None, name: str) -> bool:
    """Whether a master with SendEnv ``patterns`` passes variable ``name`` on
    (OpenSSH's ``match_pattern``: ``*`` and ``?`` only)."""
    if patterns is None:
        return True
    # fnmatch's [ opens a class; OpenSSH's patterns have none: a [ is itself.
    return any(fnmatch.fnmatchcase(name, pattern.replace("[", "[[]")) for pattern in patterns)


#: What stands in for each part of the endpoint when testing a ControlPath.
_PROBE_USER = "fabric-mux-probe"
_PROBE_HOST = "fabric-mux-probe.invalid"


def unnamed_part(
    target: SshTarget,
    view: Mapping[str, str],
    path: str,
    control_path_of: Callable[[SshTarget], str],
) -> str | None:
    """Which parts of the endpoint the ControlPath ``path`` (``target``'s, as ``ssh
    -G`` expands it) does not name (``user or port``); None if it names them
    all, so that no master of another route can be at ``path``.

    Each part is changed in turn (the user, the port, the host name, and the
    jump host for a route that goes through one) and the path asked again with
    ``control_path_of``: a part whose change leaves the path as it was is not
    in it.
    """
    port = view.get("port", "22")
    changes: list[tuple[str, SshTarget]] = [
        ("user", target._replace(user=_PROBE_USER)),
        ("port", target._replace(port=1 if port != "1" else 2)),
        ("host name", target._replace(options=(f"HostName={_PROBE_HOST}", *target.options))),
    ]
    if Endpoint.of(view).way:
        changes.append(
            ("jump host", target._replace(options=(f"ProxyJump={_PROBE_HOST}", *target.options)))
        )
    unnamed = [part for part, changed in changes if control_path_of(changed) == path]
    return " or ".join(unnamed) or None
