"""invoke's watchers shown a window of a stream's latest output, at a cost that
does not grow with the output (see :meth:`fabric_mux.runners.MuxRemote.respond`)."""

from __future__ import annotations

from typing import Any

from invoke.watchers import Responder

__all__ = ["WATCH_WINDOW", "WatchedStream", "submit"]

#: How much of each stream's latest output watchers (sudo's prompt, Responders) see.
WATCH_WINDOW = 64 * 1024


class WatchedStream:
    """The latest :data:`WATCH_WINDOW` characters of one stream, for watchers."""

    def __init__(self) -> None:
        self.text = ""
        #: Where ``text`` starts in the whole stream.
        self.start = 0
        self._chunks = 0

    def update(self, buffer_: list[str]) -> None:
        text = self.text + "".join(buffer_[self._chunks :])
        self._chunks = len(buffer_)
        cut = max(0, len(text) - WATCH_WINDOW)
        self.text = text[cut:]
        self.start += cut


def submit(watcher: Any, view: WatchedStream, buffer_: list[str]) -> list[str]:
    """What ``watcher`` answers to the stream, shown it through ``view``."""
    if not isinstance(watcher, Responder):
        return list(watcher.submit("".join(buffer_)))
    # A Responder keeps where it last matched (FailingResponder also where
    # it last saw its sentinel) as offsets into the stream it is shown.
    names = [name for name in ("index", "failure_index") if hasattr(watcher, name)]
    for name in names:
        setattr(watcher, name, max(0, getattr(watcher, name) - view.start))
    try:
        return list(watcher.submit(view.text))
    finally:
        for name in names:
            setattr(watcher, name, getattr(watcher, name) + view.start)
