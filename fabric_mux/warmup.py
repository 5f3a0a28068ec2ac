"""Start many masters at once, before any command: a cold run over many hosts
pays for one login's time, not one per host in turn.

A master that cannot start is kept as its own host's failure: its
connection raises that same error on its next use, and no other host is held
up by it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .connection import MuxConnection

__all__ = ["open_masters"]

log = logging.getLogger("fabric_mux")


def open_masters(
    connections: Iterable[MuxConnection], at_once: int
) -> dict[MuxConnection, BaseException]:
    """Open every connection, at most ``at_once`` at a time; the failures, by connection.

    Connections to one route share its master (and its lock: one login);
    a target behind a bastion opens the bastion first, so the bastion logs
    in once for all of them.
    """
    pending = list(connections)
    failures: dict[MuxConnection, BaseException] = {}
    if not pending:
        return failures

    def open_one(connection: MuxConnection) -> None:
        try:
            connection.open()
        except Exception as exc:  # each host's own; raised again on its next use
            log.debug("%s: could not start its master: %s", connection.original_host, exc)
            connection.remember_failure(exc)
            failures[connection] = exc

    with ThreadPoolExecutor(max_workers=max(1, min(at_once, len(pending)))) as pool:
        list(pool.map(open_one, pending))
    return failures
