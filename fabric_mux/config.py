"""The ``mux`` config subtree: its defaults and how a connection reads it."""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from fabric import Config
from invoke.env import Environment
from invoke.exceptions import CollectionNotFound
from invoke.loader import FilesystemLoader

from .configvalues import Values
from .exceptions import BadConfig
from .rollout import BatchSize, Budget, parse_budget, parse_serial
from .upstream import load_shell_env

__all__ = [
    "DEFAULTS",
    "KEYS",
    "Key",
    "MuxConfig",
    "MuxSettings",
    "checked_flag",
    "load_environment",
    "mux_settings",
    "project_folder",
]


class Key(NamedTuple):
    """One ``mux`` key: the configuration reference is made from these."""

    name: str
    default: Any
    #: What it takes, as its error says it (``BadConfig``), in reST.
    takes: str
    #: What it does, in reST.
    meaning: str

    @property
    def variable(self) -> str:
        """The environment variable that sets it for one run."""
        return f"FABRIC_MUX_{self.name.upper()}"


#: Every ``mux`` key, in the order the reference lists them.
KEYS: tuple[Key, ...] = (
    Key(
        "enabled",
        True,
        "true or false",
        "``fab`` with ``MuxExecutor`` hands tasks a ``MuxConnection``; ``false`` gives plain "
        "Fabric connections back (``fabmux --no-mux``).",
    ),
    Key(
        "control_dir",
        None,
        "a path, or null",
        "The folder of the control sockets; created 0700, and refused if others can write to "
        "it or it is not yours (see :ref:`control-folder`). ``null``: "
        "``$XDG_RUNTIME_DIR/fabric-mux``, else ``~/.ssh/fabric-mux``. Spaces are fine; a "
        "double quote is refused (ssh's options cannot carry one).",
    ),
    Key(
        "user_masters",
        True,
        "true or false",
        "Ride (and start, for ``ControlMaster auto``) the masters at the ControlPath your "
        "ssh_config gives a host, when the connection is the one a bare ``ssh HOST`` makes "
        "(see :doc:`/howto/own-controlmaster`). ``false``: fabric-mux's own masters only.",
    ),
    Key(
        "control_path",
        None,
        "a path, or null",
        "A control socket to ride for every host, as ``ssh -S`` does (``fabmux "
        "--mux-control-path``): ``%`` tokens and ``~`` as in ssh's ControlPath; a master is "
        "started there if none answers. The master there serves only the route it connects "
        "to. Spaces are fine; a double quote or a line break is refused (ssh's options "
        "cannot carry them), here and in ``control_dir``. ``null``: see ``user_masters``.",
    ),
    Key(
        "persist",
        600,
        "seconds, a time as ControlPersist takes it (``10m``, ``1h30m``), or yes/no",
        "``ControlPersist``: how long a master stays up after its last session (``fabmux "
        "--mux-persist``). ``0`` or ``false``: the master ends when the connection closes "
        "(and a second after a crash).",
    ),
    Key("ssh_path", "ssh", "a program's name or path", "The OpenSSH client to run."),
    Key(
        "ssh_options",
        [],
        "a list of ``Key=value`` ssh options, or text of one option a line",
        'Extra ``-o`` options for the master, e.g. ``["Compression=yes"]``; each as '
        "``ssh -o`` takes it, spaces and all, with no quoting; one starting with ``-`` is "
        "refused (each goes after ``-o``).",
    ),
    Key(
        "max_sessions",
        10,
        "a whole number, 1 or more",
        "Sessions this process opens at once on one master (sshd's ``MaxSessions`` "
        "default); more wait their turn.",
    ),
    Key(
        "server_alive_interval",
        15,
        "a whole number of seconds, or null",
        "``ServerAliveInterval`` for masters, over ssh_config's: a frozen server fails "
        "sessions instead of hanging them. ``null`` or ``0``: leave ssh_config's or ssh's.",
    ),
    Key(
        "server_alive_count_max",
        3,
        "a whole number, 1 or more",
        "``ServerAliveCountMax`` for masters.",
    ),
    Key(
        "connect_timeout",
        10,
        "a whole number of seconds, or null",
        "``ConnectTimeout`` for starting a master, where neither Fabric (``fab -t``) nor "
        "ssh_config sets one. ``null`` or ``0``: none.",
    ),
    Key(
        "reply_timeout",
        30,
        "a number of seconds, or null",
        "Seconds to wait for the master to answer a request (a session open, a forward), "
        "at most 86400. ``null`` or ``0``: no limit.",
    ),
    Key(
        "connect_retries",
        2,
        "a whole number, 0 or more",
        "Retries, with backoff, of a master start whose connection was refused or reset. "
        "Authentication, host-key and timeout failures, and starts through a ProxyCommand "
        "of yours, are never retried.",
    ),
    Key(
        "masters_at_once",
        None,
        "a whole number, 1 or more, or null",
        "Masters a ``fab`` run or a ``MuxThreadingGroup`` starts at the same time. ``null``: "
        "32 at first, one more for each login that completes, halved by a timeout or a "
        "refused connection, and at most 8 at once through one door (a server's address, "
        "or your ProxyCommand), below sshd's default ``MaxStartups 10:30:100``.",
    ),
    Key(
        "parallel",
        False,
        "true or false",
        "``fab`` runs each task on all hosts at once, tasks in order (``fabmux -P``).",
    ),
    Key(
        "pool_size",
        None,
        "a whole number, 1 or more, or null",
        "Hosts a parallel run works on at the same time (``fabmux -z``). ``null``: all of "
        "them, as file descriptors allow.",
    ),
    Key(
        "prefix",
        True,
        "true or false",
        "In a parallel run or a ``MuxThreadingGroup``, each output line starts with "
        "``[host]``. ``false`` leaves the lines bare.",
    ),
    Key(
        "serial",
        None,
        "a number of hosts a batch, a percentage (``20%``), or a list of them "
        "(``1,10%,100%``), or null",
        "A rolling run (``fabmux --serial``): every task on a batch of hosts, then on the "
        "next; a list gives batch after batch, its last size repeated (``1,10%,100%``: a "
        "canary first). Implies ``parallel``. ``null``: one batch.",
    ),
    Key(
        "max_fail",
        None,
        "a number of hosts (0 or more) or a percentage (0% to 100%), or null",
        "The failure budget (``fabmux --max-fail``): hosts that may fail, a number or a "
        "percentage of those started, before no task or batch starts any more. ``null``: "
        "with ``serial``, 0; else no limit.",
    ),
    Key(
        "gather",
        False,
        "true or false",
        "In a parallel run, each task's output is shown once per distinct output, under the "
        "hosts that gave it (``web[01-38,40]``), when the task ends (``fabmux --gather``).",
    ),
    Key(
        "report",
        None,
        "a path, or null",
        "Write a JSON report of each parallel run to this file (``fabmux --report``; see "
        ":doc:`/reference/report`). ``null``: none.",
    ),
    Key(
        "failed_hosts",
        None,
        "a path, null or false",
        "Where a parallel run lists the hosts it left undone, for ``-H @FILE`` (a run "
        "where every host was ok removes it), in a folder of yours alone. ``null``: "
        "``$XDG_STATE_HOME/fabric-mux/failed-hosts`` (else "
        "``~/.local/state/fabric-mux/failed-hosts``); ``false``: nowhere.",
    ),
)

#: Every ``mux`` key with its default. ``fabric.yaml`` may set any subset.
DEFAULTS: dict[str, Any] = {key.name: key.default for key in KEYS}


class MuxSettings(NamedTuple):
    """The ``mux`` subtree, defaults filled in, values normalised."""

    enabled: bool
    control_dir: str | None
    user_masters: bool
    control_path: str | None
    persist: str
    ssh_path: str
    ssh_options: tuple[str, ...]
    max_sessions: int
    server_alive: tuple[int, int] | None
    connect_timeout: int | None
    reply_timeout: float | None
    connect_retries: int
    masters_at_once: int | None
    parallel: bool
    pool_size: int | None
    prefix: bool
    serial: tuple[BatchSize, ...] | None
    max_fail: Budget | None
    gather: bool
    report: str | None
    #: None: nowhere.
    failed_hosts: str | None

    @property
    def persists(self) -> bool:
        """Whether the master outlives this process (ControlPersist above the grace second)."""
        return self.persist != "1"


def mux_settings(config: Any) -> MuxSettings:
    """Read the ``mux`` subtree of a Fabric/invoke config, defaults filled in.

    :raises BadConfig: a key fabric-mux does not know, or a value of the wrong
        kind; the message names the key and what it takes.
    """
    try:
        given = config.get("mux") or {}
    except AttributeError:
        given = {}
    if not isinstance(given, Mapping):
        raise BadConfig(f"the mux config must be a mapping of keys, not {type(given).__name__}")
    unknown = set(given) - set(DEFAULTS)
    if unknown:
        raise BadConfig(
            f"unknown mux config keys: {', '.join(sorted(map(str, unknown)))} "
            f"(known: {', '.join(DEFAULTS)})"
        )
    return _settings({**DEFAULTS, **given})


def checked_flag(flag: str, key: str, value: str) -> str:
    """``value``, given on the command line as ``flag`` for ``mux.KEY``, read as the
    key reads it (in fabric.yaml or the environment).

    :raises BadConfig: a value the key does not take; the message names the flag.
    """
    _settings({**DEFAULTS, key: value}, shown={key: flag})
    return value


def _settings(given: dict[str, Any], shown: Mapping[str, str] | None = None) -> MuxSettings:
    values = Values(given, shown)
    interval = values.number("server_alive_interval", minimum=0, empty=True)
    count = values.number("server_alive_count_max", minimum=1)
    return MuxSettings(
        enabled=values.flag("enabled"),
        control_dir=values.path("control_dir"),
        user_masters=values.flag("user_masters"),
        control_path=values.path("control_path"),
        persist=values.persist("persist"),
        ssh_path=values.text("ssh_path"),
        ssh_options=values.options("ssh_options"),
        max_sessions=values.number("max_sessions", minimum=1),
        server_alive=(interval, count) if interval else None,
        connect_timeout=values.number("connect_timeout", minimum=0, empty=True) or None,
        reply_timeout=values.seconds("reply_timeout"),
        connect_retries=values.number("connect_retries", minimum=0, empty=True),
        masters_at_once=values.width("masters_at_once"),
        parallel=values.flag("parallel"),
        pool_size=values.width("pool_size"),
        prefix=values.flag("prefix"),
        serial=values.parsed("serial", parse_serial),
        max_fail=values.parsed("max_fail", parse_budget),
        gather=values.flag("gather"),
        report=values.path("report"),
        failed_hosts=values.failed_hosts("failed_hosts"),
    )


def project_folder(
    config: Any,
    start: str | None = None,
    name: str | None = None,
    loader_class: type[FilesystemLoader] = FilesystemLoader,
) -> str:
    """The folder whose ``fabric.yaml`` a task run here reads: the fabfile's,
    found as ``fab`` finds it (searching up from ``start``, default here), else here."""
    loader = loader_class(config=config, start=start)
    try:
        spec = loader.find(name or config.tasks.collection_name)
    except CollectionNotFound:
        return os.getcwd()
    origin = spec.origin if spec is not None else None
    return os.path.dirname(origin) if origin else os.getcwd()


#: What invoke's ``DataProxy._get`` looks for on a config that only a section has.
_ROOT_LACKS = frozenset({"_keypath", "_root"})


class _MuxEnvironment(Environment):
    """invoke's reader of ``FABRIC_*`` variables, with every ``mux`` key taken as
    the text it is, for :func:`mux_settings` to read as it reads fabric.yaml.

    invoke casts a variable by the type of the value it replaces: under a bool
    any text but ``0`` is true (``FABRIC_MUX_ENABLED=false`` was on), under a
    number ``int()`` fails on ``10m`` with a traceback, and a list takes no text
    at all. It also maps only the keys the config has already, so a config
    without ``mux`` defaults (stock fab's) would miss them.
    """

    def _crawl(self, key_path: list[str], env_vars: Mapping[str, Sequence[str]]) -> dict[str, Any]:
        found = super()._crawl(key_path, env_vars)
        if not key_path:
            for key in DEFAULTS:
                found.setdefault(self._to_env_var(["mux", key]), ["mux", key])
        return found

    def _path_set(self, key_path: Sequence[str], value: str) -> None:
        if len(key_path) == 2 and key_path[0] == "mux":
            self.data.setdefault("mux", {})[key_path[1]] = value
        else:
            super()._path_set(key_path, value)


def load_environment(config: Any) -> None:
    """``config.load_shell_env()`` (any invoke config), with the ``FABRIC_MUX_*``
    variables read as :func:`mux_settings` reads fabric.yaml."""
    load_shell_env(config, _MuxEnvironment)


class MuxConfig(Config):  # type: ignore[misc]
    """Fabric's config with the ``mux`` subtree in its defaults.

    With it, ``FABRIC_MUX_PERSIST=10m`` style environment variables work too,
    read as fabric.yaml is (see :func:`load_environment`). ``fabmux`` and
    ``fabric-mux`` use it.
    """

    def load_shell_env(self) -> None:
        load_environment(self)

    def __getattr__(self, key: str) -> Any:
        # invoke asks the root config for these two on every read of a section
        # (config.run, config.timeouts...), and the root has neither: its
        # AttributeError first lists every attribute of the class, which made
        # up a sixth of a parallel run's work a host.
        if key in _ROOT_LACKS:
            raise AttributeError(key)
        return super().__getattr__(key)

    @staticmethod
    def global_defaults() -> dict[str, Any]:
        defaults: dict[str, Any] = Config.global_defaults()
        defaults["mux"] = copy.deepcopy(DEFAULTS)
        return defaults
