"""Groups of ``MuxConnection``: Fabric's ``SerialGroup`` and ``ThreadingGroup`` whose
members share masters, and whose masters all start together before the first command."""

from __future__ import annotations

from typing import Any

from fabric import SerialGroup, ThreadingGroup

from .connection import MuxConnection
from .warmup import open_masters

__all__ = ["MuxSerialGroup", "MuxThreadingGroup"]


class _OpensFirst:
    """Open every member's master at once (``mux.masters_at_once`` at a time), then act."""

    #: Whether members print at the same time (their lines then carry the host).
    concurrent = False

    def __init__(self, *hosts: str, **kwargs: Any) -> None:
        super().__init__()  # an empty Group: its members are MuxConnections
        self.extend(MuxConnection(host, **kwargs) for host in hosts)  # type: ignore[attr-defined]

    def _do(self, method: str, *args: Any, **kwargs: Any) -> Any:
        members = [c for c in self if isinstance(c, MuxConnection)]  # type: ignore[attr-defined]
        at_once = members[0].mux.masters_at_once if members else 1
        open_masters(members, at_once)
        for member in members:
            if self.concurrent and member.mux.prefix and member.output_prefix is None:
                member.output_prefix = f"[{member.original_host}] "
        try:
            return super()._do(method, *args, **kwargs)  # type: ignore[misc]
        finally:
            for member in members:
                member.remember_failure(None)


class MuxSerialGroup(_OpensFirst, SerialGroup):  # type: ignore[misc]
    """``SerialGroup`` of ``MuxConnection`` objects: ``MuxSerialGroup("web1", "web2")``."""


class MuxThreadingGroup(_OpensFirst, ThreadingGroup):  # type: ignore[misc]
    """``ThreadingGroup`` of ``MuxConnection`` objects: ``MuxThreadingGroup("web1", "web2")``.

    Its members' output lines start with ``[host]`` (``mux.prefix``), whole
    lines only: Fabric's own ThreadingGroup mixes hosts' bytes in one line.
    """

    concurrent = True
