"""Which route a master serves.

A control path that several routes can name (the user's ``ControlPath
~/.ssh/cm-%h`` for two hosts of one address, one ``mux.control_path`` for two
hosts) may hold a master of another route: OpenSSH alone would run the
command there. fabric-mux hands a master only to the route it connects to,
judged by its :class:`Endpoint`: the account, the host name and port ssh
connects to, the way there (each jump host resolved as that ssh resolves it,
or the ProxyCommand), and the rules its server's host key is checked by.

What a master connects to is learned, in order:

- a master this process started serves the route it was started for;
- a master whose command line stands (one started with ``-f`` or in the
  foreground, fabric-mux's own included): ``ssh -G`` of that command line, its
  words in their order, relative paths from its working folder; unless a file
  that ``ssh -G`` read changed after the master started (it may have read
  another version then): then it cannot be told;
- a master started by an ``ssh`` client with ``ControlMaster auto`` and
  ``ControlPersist`` rewrote its command line (``ssh: PATH [mux]``): then the
  path itself must name the route (:func:`unnamed_part`), as ``%C`` or
  ``%r@%h:%p`` do, and the route must be direct (no token names a ProxyCommand,
  nor a jump host's own settings). Its host-key rules cannot be read: they are
  taken to be the user's ssh_config's, which made it.

A master at the user's path that a direct route would ride must also have a TCP
connection to the route's host and port as its transport
(:mod:`fabric_mux.connected`): neither its
command line nor its path says whether it went through a proxy of its own, or
where a ``Match exec`` of its ssh_config sent it. A master whose ssh_config runs
``Match exec`` cannot be told at all: what the command answered when it started
is not known; nor can one whose ProxyCommand (or KnownHostsCommand, or a hop's)
has words its shell expands (``$NAME``, ``$(...)``): that shell read an
environment, or ran commands, that we cannot see.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

from .argv import SHELL_RUN, SshTarget, resolved_values
from .exceptions import EnvNotSent
from .hops import without_log

__all__ = [
    "HOST_KEY_RULES",
    "Endpoint",
    "Served",
    "check_env_passed",
    "config_file_of",
    "rewritten_title",
    "send_env_of",
    "sends_env",
    "ssh_command_words",
    "unnamed_part",
]

#: The ``ssh -G`` keywords that decide how the server's host key is checked.
HOST_KEY_RULES = (
    "stricthostkeychecking",
    "userknownhostsfile",
    "globalknownhostsfile",
    "hostkeyalias",
    "hostkeyalgorithms",
    "knownhostscommand",
    "checkhostip",
    "verifyhostkeydns",
)


class Endpoint(NamedTuple):
    """Where a session lands, and how its server is verified."""

    user: str
    hostname: str
    port: str
    #: ``jump`` and each hop's own endpoint, ``command`` and the ProxyCommand
    #: (fabric-mux's own log file left out), or empty for a direct connection.
    way: str
    #: The host-key rules (:data:`HOST_KEY_RULES`), as ``ssh -G`` says them.
    keys: tuple[tuple[str, str], ...] = ()
    #: Whether a command ssh runs through a shell on the way (a ProxyCommand, a
    #: KnownHostsCommand, a hop's) has words that shell expands (``$NAME``,
    #: ``$(...)``, backquotes): from an environment or commands we cannot see.
    shell: bool = False

    @classmethod
    def of(cls, view: Mapping[str, str], hops: Sequence[Endpoint] = ()) -> Endpoint:
        """The endpoint of a parsed ``ssh -G`` answer; ``hops``: its ProxyJump's
        hops, each resolved as that ssh resolves it."""
        jump = view.get("proxyjump", "none")
        command = view.get("proxycommand", "none")
        if jump != "none":
            way = "jump " + (" > ".join(hop.full() for hop in hops) if hops else jump)
        elif command != "none":
            way = f"command {without_log(command)}"
        else:
            way = ""
        keys = tuple((key, view.get(key, "")) for key in HOST_KEY_RULES)
        shell = any(hop.shell for hop in hops) or any(
            "$" in view.get(key, "") or "`" in view.get(key, "") for key in SHELL_RUN
        )
        return cls(
            view.get("user", ""), view.get("hostname", ""), view.get("port", "22"), way, keys, shell
        )

    def full(self) -> str:
        """Everything that tells it apart, as text."""
        return f"{self.user}@{self.hostname}:{self.port} [{self.way}] {self.keys}"

    def describe(self) -> str:
        """``user@host:port``, and how it gets there if not directly. (Not a
        ProxyCommand's words: they may hold a secret.)"""
        where = f"{self.user}@{self.hostname}:{self.port}"
        if self.way.startswith("jump "):
            hops = self.way[5:].split(" > ")
            return f"{where} via {' > '.join(hop.split(' [', 1)[0] for hop in hops)}"
        if self.way:
            return f"{where} through a ProxyCommand"
        return where


class Served(NamedTuple):
    """What a master process was found to serve."""

    #: None: it cannot be told; ``unknown`` says why.
    endpoint: Endpoint | None
    #: The master's SendEnv patterns (ssh passes a session's variables only for
    #: names they match); None: every name (fabric-mux's own masters).
    send_env: tuple[str, ...] | None
    #: Why the endpoint cannot be told: empty where it can; :data:`TITLE` where
    #: the command line is gone (the path may still name the route).
    unknown: str = ""
    #: The far end of its transport where that is a TCP connection, which a
    #: direct route checks (see :mod:`fabric_mux.connected`): empty where it is
    #: not, or cannot be read; None for a master this process started, which
    #: serves the route it was started for.
    peers: frozenset[tuple[str, int]] | None = None


#: :attr:`Served.unknown` of a master whose command line ssh rewrote.
TITLE = "its ssh rewrote its command line"

#: ssh's options that take an argument (OpenSSH 8.0 to 10.x, ``ssh.c``'s getopt string).
_WITH_ARGUMENT = frozenset("BbcDEeFIiJLlmOoPpQRSWw")
#: Its options that take none.
_FLAGS = frozenset("1246AaCfGgKkMNnqsTtVvXxYyZ")
#: Of them, what ``ssh -G`` must not be given: a log file it would write, a
#: control command or query instead of the configuration, the version.
_LEFT_OUT = frozenset("EOQWGV")


def ssh_command_words(argv: Sequence[str], cwd: str | None) -> tuple[str, ...] | None:
    """The words of the ssh command line ``argv`` that ``ssh -G`` needs to see what
    it connects to: its options and destination in their order (ssh keeps the
    first value it meets of each keyword, the destination's ``user@`` first of
    all), without its remote command and without what would make ``ssh -G`` do
    something else (:data:`_LEFT_OUT`). A relative ``-F`` is taken from ``cwd``,
    the process's working folder. None if ``argv`` is not an ssh command line
    that names a destination, or a relative ``-F`` has no known folder.
    """
    if not argv or not os.path.basename(argv[0]).startswith("ssh"):
        return None
    words: list[str] = []
    rest = list(argv[1:])
    destination = False
    index = 0
    while index < len(rest):
        word = rest[index]
        index += 1
        if word == "--":
            if not destination and index < len(rest):
                words += ["--", rest[index]]
                destination = True
            break
        if not word.startswith("-") or word == "-":
            if destination:
                break  # the remote command
            words.append(word)
            destination = True
            continue
        letters = word[1:]
        while letters:
            letter, letters = letters[0], letters[1:]
            if letter in _FLAGS:
                if letter not in _LEFT_OUT:
                    words.append(f"-{letter}")  # in its place: -A before -o ForwardAgent=no
                continue
            if letter not in _WITH_ARGUMENT:
                return None  # not an option ssh knows: not ssh's command line
            if not letters:
                if index >= len(rest):
                    return None
                letters, index = rest[index], index + 1
            value, letters = letters, ""
            if letter == "F" and value != "none" and not os.path.isabs(value):
                if cwd is None:
                    return None
                value = os.path.join(cwd, value)
            if letter not in _LEFT_OUT:
                words += [f"-{letter}", value]
    return tuple(words) if destination else None


def config_file_of(words: Sequence[str]) -> str | None:
    """The ``-F`` file a command line's words name (the first one, as ssh takes)."""
    for flag, value in zip(words, words[1:]):
        if flag == "-F":
            return value
    return None


def rewritten_title(argv: Sequence[str], path: str) -> bool:
    """Whether ``argv`` is the title a backgrounded ``ControlPersist`` master
    gives itself (``ssh: PATH [mux]``): its own command line is gone."""
    return len(argv) == 1 and argv[0] == f"ssh: {path} [mux]"


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

    Each part is changed in turn (the user, the port, the host name) and the
    path asked again with ``control_path_of``: a part whose change leaves the
    path as it was is not in it. A way through a ProxyCommand or a jump host is
    never named whole: no token holds a ProxyCommand, and ``%j`` (``%C``'s part
    of it) is the jump host's name, not where another ssh_config takes it.
    """
    if Endpoint.of(view).way:
        return "way there, which no token names whole (a ProxyCommand, a jump host's settings)"
    port = view.get("port", "22")
    changes: list[tuple[str, SshTarget]] = [
        ("user", target._replace(user=_PROBE_USER)),
        ("port", target._replace(port=1 if port != "1" else 2)),
        ("host name", target._replace(options=(f"HostName={_PROBE_HOST}", *target.options))),
    ]
    unnamed = [part for part, changed in changes if control_path_of(changed) == path]
    return " or ".join(unnamed) or None


def check_env_passed(
    host: str,
    control_path: str,
    patterns: tuple[str, ...] | None,
    known: bool,
    names: Sequence[str],
) -> None:
    """Make sure the master at ``control_path``, whose SendEnv ``patterns`` are
    ``known`` or not, passes variables ``names`` of ``host``'s sessions on.

    :raises EnvNotSent: naming those it would drop.
    """
    if not known:
        raise EnvNotSent(
            f"{host}: the master at {control_path} is your own, "
            "started by an ssh command that rewrote its command line: which variables "
            f"it passes on (its SendEnv) cannot be told, so {' '.join(names)} are not "
            "sent: set inline_ssh_env to true, or start that master with ssh -fN; "
            "nothing ran"
        )
    dropped = [name for name in names if not sends_env(patterns, name)]
    if dropped:
        listed = " ".join(dropped)
        raise EnvNotSent(
            f"{host}: the master at {control_path} is your own, and "
            f"its SendEnv does not pass {listed} on to the server: add `SendEnv {listed}` "
            f"for {host} in your ssh_config (and restart that master), or "
            "set inline_ssh_env to true; nothing ran"
        )
