"""The private parts of invoke, fabric and paramiko that fabric-mux relies on, in one place.

A release of either could rename any of them; ``tests/test_upstream.py`` fails
loudly, naming the one that went, instead of letting a run break obscurely.
Everything else fabric-mux uses of them is public API.
"""

from __future__ import annotations

from typing import Any

__all__ = ["RELIED_ON", "runtime_ssh_path", "set_attributes", "set_overrides"]

#: (module, class, attribute) for each private name used, and where it is used.
RELIED_ON: tuple[tuple[str, str, str, str], ...] = (
    # runners.MuxRemote overrides these invoke Runner internals.
    ("invoke.runners", "Runner", "_handle_output", "wraps it to stop waits on a failure"),
    ("invoke.runners", "Runner", "_write_proc_stdin", "writes a session's stdin"),
    # ... and reads these instance attributes, set in Runner.__init__.
    ("invoke.runners", "Runner", "_timer", "cancels the timeout timer in stop()"),
    ("invoke.runners", "Runner", "_disowned", "starts a disowned command"),
    ("invoke.runners", "Runner", "_finish", "runners.MuxRemote ends its session there"),
    # connection.MuxConnection hands fabric its own runner for run() and sudo(),
    ("fabric.connection", "Connection", "_remote_runner", "gives run() a MuxRemote"),
    # ... and sets its config past invoke's DataProxy (see set_attributes).
    ("invoke.config", "DataProxy", "_set", "sets attributes past the config proxy"),
    # group.MuxGroup opens every member's master at once before Fabric's loop.
    ("fabric.group", "Group", "_do", "opens the masters before each group call"),
    # connection.MuxConnection overrides fabric's equality key.
    ("fabric.connection", "Connection", "_identity", "keeps aliases of one address apart"),
    # The runtime ssh_config (fab -S) and command-line overrides.
    ("fabric.config", "Config", "_runtime_ssh_path", "the ssh_config given to ssh -F"),
    ("invoke.config", "Config", "_overrides", "fabmux's --mux-* flags"),
)

#: Of :data:`RELIED_ON`, the ones that exist only on instances.
INSTANCE_ATTRIBUTES = frozenset({"_timer", "_disowned", "_runtime_ssh_path", "_overrides"})


def runtime_ssh_path(config: Any) -> str | None:
    """The ssh_config given at run time (``fab -S``, ``Config(runtime_ssh_path=...)``)."""
    path: str | None = config._runtime_ssh_path
    return path


def set_overrides(config: Any, section: str, values: dict[str, Any]) -> None:
    """Put ``values`` into ``section`` at the config's override level (as ``-`` flags do)."""
    config._overrides.setdefault(section, {}).update(values)
    config.merge()


def set_attributes(proxy: Any, **values: Any) -> None:
    """Set real attributes on an invoke ``DataProxy`` (a Context, a Connection), which
    would otherwise write them into its config."""
    proxy._set(**values)
