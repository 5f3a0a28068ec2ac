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

from .exceptions import UserMasterLeftAlone
from .route import Route

__all__ = ["mux"]


def _route(c: Any) -> Route:
    # Under stock fab (no MuxExecutor) tasks get a plain Connection.
    own = getattr(c, "route", None)
    if callable(own):
        route: Route = own()
        return route
    return Route.for_host(c.original_host, c.config)


@task  # type: ignore[untyped-decorator]
def status(c: Any) -> None:
    """Show whether this host's master is running."""
    master = _route(c).master()
    pid = master.alive()
    state = f"master running (pid={pid})" if pid else "no master running"
    if master.users:
        state += " (your own)"
    print(f"{c.original_host}: {state} at {master.control_path}")


@task  # type: ignore[untyped-decorator]
def stop(c: Any) -> None:
    """Stop this host's master (its running sessions end)."""
    master = _route(c).master()
    try:
        stopped = master.stop()
    except UserMasterLeftAlone as exc:
        print(exc)
        return
    print(f"{c.original_host}: {'master stopped' if stopped else 'no master was running'}")


mux = Collection("mux", status, stop)
