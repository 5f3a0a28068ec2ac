"""The ``mux`` config subtree: its defaults and how a connection reads it."""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from typing import Any, NamedTuple

from fabric import Config
from invoke.exceptions import CollectionNotFound
from invoke.loader import FilesystemLoader

from .argv import persist_value, ssh_options

__all__ = ["DEFAULTS", "MuxConfig", "MuxSettings", "mux_settings", "project_folder"]

#: Every ``mux`` key with its default. ``fabric.yaml`` may set any subset.
DEFAULTS: dict[str, Any] = {
    # fab hands tasks a MuxConnection (False: plain fabric.Connection).
    "enabled": True,
    # Folder of the control sockets (None: $XDG_RUNTIME_DIR/fabric-mux or ~/.ssh/fabric-mux).
    "control_dir": None,
    # Ride (or, with ControlMaster auto, start) the master at the ControlPath that the
    # user's ssh_config names for a host, where the connection is the one a bare
    # `ssh HOST` makes (False: always a master of fabric-mux's own).
    "user_masters": True,
    # A control socket to ride, as `ssh -S PATH` does (ssh's % tokens and ~ expanded):
    # the master there decides the user, host and settings. None: see user_masters.
    "control_path": None,
    # ControlPersist seconds after the last session; 0/False: only while this process holds it.
    "persist": 600,
    # The OpenSSH client to run.
    "ssh_path": "ssh",
    # Extra "-o Key=value" options for the master, e.g. ["Compression=yes"].
    "ssh_options": [],
    # Sessions this process opens at once on one master (sshd's MaxSessions is 10).
    "max_sessions": 10,
    # Keep-alives for masters, over ssh_config's (None: leave ssh_config's or ssh's value).
    "server_alive_interval": 15,
    "server_alive_count_max": 3,
    # ConnectTimeout for starting a master when neither Fabric nor ssh_config sets one.
    "connect_timeout": 10,
    # Seconds to wait for the master to answer a request (a session open, a forward).
    "reply_timeout": 30,
    # Retries, with backoff, of a master start whose connection was refused or reset.
    "connect_retries": 2,
    # Masters a run (fab, a MuxThreadingGroup) starts at the same time (null: as many as
    # keep logins completing, see fabric_mux.warmup).
    "masters_at_once": None,
    # fab runs each task on all hosts at once (fabmux -P), tasks in order.
    "parallel": False,
    # Hosts a parallel run works on at the same time (fabmux -z; null: all of them).
    "pool_size": None,
    # In a parallel run or a MuxThreadingGroup, each output line starts with [host].
    "prefix": True,
}


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

    @property
    def persists(self) -> bool:
        """Whether the master outlives this process (ControlPersist above the grace second)."""
        return self.persist != "1"


def mux_settings(config: Any) -> MuxSettings:
    """Read the ``mux`` subtree of a Fabric/invoke config, defaults filled in."""
    try:
        given = config.get("mux") or {}
    except AttributeError:
        given = {}
    if not isinstance(given, Mapping):
        raise TypeError(f"the 'mux' config must be a mapping, not {type(given).__name__}")
    unknown = set(given) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown mux config keys: {', '.join(sorted(unknown))}")
    values = {**DEFAULTS, **given}
    interval = values["server_alive_interval"]
    return MuxSettings(
        enabled=_flag(values["enabled"]),
        control_dir=_path_text(values["control_dir"]),
        user_masters=_flag(values["user_masters"]),
        control_path=_path_text(values["control_path"]),
        persist=persist_value(values["persist"]),
        ssh_path=str(values["ssh_path"]),
        ssh_options=ssh_options(values["ssh_options"]),
        max_sessions=max(1, int(values["max_sessions"])),
        server_alive=(int(interval), int(values["server_alive_count_max"])) if interval else None,
        connect_timeout=int(values["connect_timeout"]) if values["connect_timeout"] else None,
        reply_timeout=float(values["reply_timeout"]) if values["reply_timeout"] else None,
        connect_retries=max(0, int(values["connect_retries"] or 0)),
        masters_at_once=_width(values["masters_at_once"]),
        parallel=_flag(values["parallel"]),
        pool_size=_width(values["pool_size"]),
        prefix=_flag(values["prefix"]),
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


def _width(value: Any) -> int | None:
    """How many at once; None (unset) leaves it to fabric-mux."""
    return None if value is None else max(1, int(value or 1))


def _flag(value: object) -> bool:
    """A yes/no setting; from an environment variable it comes as text."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "yes", "true", "on")
    return bool(value)


def _path_text(value: object) -> str | None:
    """A path from the config as text; bytes as the OS would decode them (a name
    that is not UTF-8 keeps its bytes, and is refused where it is used)."""
    if not value:
        return None
    if isinstance(value, bytes):
        return os.fsdecode(value)
    return str(value)


class MuxConfig(Config):  # type: ignore[misc]
    """Fabric's config with the ``mux`` subtree in its defaults.

    With it, ``FABRIC_MUX_PERSIST=60`` style environment variables work too
    (invoke maps only keys its defaults know). ``fabmux`` uses it.
    """

    @staticmethod
    def global_defaults() -> dict[str, Any]:
        defaults: dict[str, Any] = Config.global_defaults()
        defaults["mux"] = copy.deepcopy(DEFAULTS)
        return defaults
