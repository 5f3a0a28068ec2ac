"""Tasks a fabfile can add: ``fab -H web1,web2 mux.status`` and ``mux.stop``.

::

    from invoke import Collection
    from fabric_mux.collection import mux

    ns = Collection(deploy, mux)
"""

from __future__ import annotations

from typing import Any

from fabric import task
from invoke.collection import Collection

from .connection import MuxConnection

__all__ = ["mux"]


def _as_mux(c: Any) -> MuxConnection:
    # Under stock fab (no MuxExecutor) tasks get a plain Connection.
    if isinstance(c, MuxConnection):
        return c
    return MuxConnection(c.original_host, config=c.config)


@task  # type: ignore[untyped-decorator]
def status(c: Any) -> None:
    """Show whether this host's master is running."""
    master = _as_mux(c).route_master()
    pid = master.alive()
    state = f"master running (pid={pid})" if pid else "no master running"
    print(f"{c.original_host}: {state} at {master.control_path}")


@task  # type: ignore[untyped-decorator]
def stop(c: Any) -> None:
    """Stop this host's master (its running sessions end)."""
    master = _as_mux(c).route_master()
    stopped = master.stop()
    print(f"{c.original_host}: {'master stopped' if stopped else 'no master was running'}")


mux = Collection("mux", status, stop)
