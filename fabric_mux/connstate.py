"""A connection's own state: what it read when made, and what it holds now (its
route, master, sessions, SFTP client); a forked child starts from a fresh one."""

from __future__ import annotations

import os
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .config import MuxSettings
from .fabricattrs import Defaults, Given
from .master import Master
from .route import Route
from .session import Session

if TYPE_CHECKING:
    from paramiko import SFTPClient

    from .screen import LineSink

__all__ = ["MuxState"]


@dataclass
class MuxState:
    """A connection's own state: what it read at creation and what it holds now."""

    #: The ``mux`` settings, read once (the config may be shared with threads
    #: making stock Connections, which write to it).
    settings: MuxSettings
    #: What the caller gave explicitly (``user@host:port`` included).
    given: Given
    #: The config's user, port... as they were when the connection was made.
    defaults: Defaults
    config_gateway: Any
    #: Fabric's attributes, each worked out on first read (see fabricattrs).
    fabric: dict[str, Any] = field(default_factory=dict)
    #: Those of them the caller assigned to: explicit, as if given.
    assigned: set[str] = field(default_factory=set)
    #: The process this state belongs to: a forked child makes its own.
    pid: int = field(default_factory=os.getpid)
    #: How the connection reaches its host, once opened.
    route: Route | None = None
    #: The route's master, once known (kept after close, for control_path and master_pid).
    master: Master | None = None
    #: Between open() and close().
    opened: bool = False
    #: Whether we hold the master open (``persist`` 0: it lives while held).
    held: bool = False
    sessions: weakref.WeakSet[Session] = field(default_factory=weakref.WeakSet)
    #: Sessions running unattended (``disown=True``) until the connection closes.
    disowned: list[Session] = field(default_factory=list)
    sftp: SFTPClient | None = None
    #: Why this connection's master could not start when it was opened in a
    #: group; raised again on its next use (see fabric_mux.warmup).
    start_error: BaseException | None = None
    #: Put before each line of output, in a parallel run (``[web1] ``).
    output_prefix: str | None = None
    #: Where the lines go instead of the screen (gathered output, see fabric_mux.gather).
    output_sink: LineSink | None = None

    def fresh(self) -> MuxState:
        """The same settings, holding nothing (for a forked child)."""
        return MuxState(
            self.settings,
            self.given,
            self.defaults,
            self.config_gateway,
            dict(self.fabric),
            set(self.assigned),
        )
