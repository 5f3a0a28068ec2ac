"""Port forwards on a master: what the mux protocol is asked for, and the
forwards this process holds, shared by identical blocks."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from typing import NamedTuple

from .exceptions import BadForward, ForwardFailed, MasterUnavailable, RequestDenied
from .protocol import FWD_LOCAL, MuxClient

__all__ = ["ForwardSpec", "Forwards"]


class ForwardSpec(NamedTuple):
    """A forward as the mux protocol states it."""

    kind: int
    listen_host: str
    listen_port: int
    connect_host: str
    connect_port: int

    def check(self) -> None:
        if not 0 <= self.listen_port <= 65535:
            raise BadForward(f"cannot listen on port {self.listen_port}: ports are 0-65535")
        if not 1 <= self.connect_port <= 65535:
            raise BadForward(f"cannot connect to port {self.connect_port}: ports are 1-65535")

    def describe(self) -> str:
        where = "local" if self.kind == FWD_LOCAL else "remote"
        return (
            f"{where} {self.listen_host}:{self.listen_port} to "
            f"{self.connect_host}:{self.connect_port}"
        )


class _Forward:
    def __init__(self, port: int) -> None:
        self.port = port
        self.users = 0


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


class Forwards:
    """The forwards this process holds on one master, with how many blocks of
    ours use each. ``client`` makes a control connection to the master."""

    def __init__(self, client: Callable[[], MuxClient], host: str) -> None:
        self._client = client
        self.host = host
        self._open: dict[ForwardSpec, _Forward] = {}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def hold(self, spec: ForwardSpec) -> Iterator[int]:
        """Hold ``spec`` on the master for the block; yields its listening port
        (see :meth:`fabric_mux.master.Master.forward`).

        The master shares identical forwards and one cancel removes them all,
        so identical blocks of this process share one forward, cancelled when
        the last of them ends. A local port 0 gets a free port of ours (the
        master's own choice is not reported back for local forwards).
        """
        spec.check()
        with self._lock:
            entry = self._open.get(spec)
            if entry is None:
                if spec.kind == FWD_LOCAL and spec.listen_port == 0:
                    spec = self._open_on_free_port(spec)
                    port = spec.listen_port
                else:
                    port = self._open_forward(spec)
                entry = self._open[spec] = _Forward(port)
            entry.users += 1
        try:
            yield entry.port
        finally:
            with self._lock:
                entry.users -= 1
                if entry.users == 0:
                    del self._open[spec]
                    self._cancel_forward(spec)

    def _open_forward(self, spec: ForwardSpec) -> int:
        """Ask the master for ``spec``; the port it listens on."""
        client = self._client()
        try:
            chosen = client.open_forward(*spec)
        except RequestDenied as exc:
            raise ForwardFailed(
                f"{self.host}: could not forward {spec.describe()}: {exc.reason}"
            ) from None
        finally:
            client.close()
        return chosen or spec.listen_port

    def _open_on_free_port(self, spec: ForwardSpec) -> ForwardSpec:
        """A local forward on a port nothing listens on; a few tries, as one may be
        taken between our look and the master's bind."""
        for attempt in range(3):
            candidate = spec._replace(listen_port=_free_port(spec.listen_host))
            try:
                self._open_forward(candidate)
            except ForwardFailed:
                if attempt == 2:
                    raise
                continue
            return candidate
        raise AssertionError("unreachable")

    def _cancel_forward(self, spec: ForwardSpec) -> None:
        try:
            client = self._client()
        except MasterUnavailable:
            return  # the master, and its forwards with it, went away already
        try:
            client.close_forward(*spec)
        except (RequestDenied, MasterUnavailable, OSError):
            pass
        finally:
            client.close()
