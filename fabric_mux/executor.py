"""``MuxExecutor``: stock ``fab`` hands every task a ``MuxConnection``.

Before the first task runs, the masters of every host of the run start
together (``mux.masters_at_once`` at a time; a bastion logs in once for the
hosts behind it), so a cold run over many hosts pays for about one login's
time. Then the tasks run as ``fab`` always runs them.
"""

from __future__ import annotations

import threading
from typing import Any

from fabric import Connection, Executor
from fabric.tasks import ConnectionCall

from .config import mux_settings
from .connection import MuxConnection

__all__ = ["MuxConnectionCall", "MuxExecutor"]


def _key(init_kwargs: dict[str, Any]) -> str:
    """One host of the run, as ``fab`` names it (``-H user@host:port`` or a task's hosts)."""
    return repr(sorted(init_kwargs.items()))


class _Run:
    """What the calls of one ``fab`` run share: the hosts, the failed starts, the
    connections to close at the end."""

    def __init__(self) -> None:
        self.hosts: dict[str, dict[str, Any]] = {}
        self.failures: dict[str, BaseException] = {}
        self.opened: list[Connection] = []
        self._started = False
        self._lock = threading.Lock()

    def start_masters(self, config: Any) -> None:
        """Open every host's master at once, the first time a task needs a connection."""
        with self._lock:
            if self._started:
                return
            self._started = True
            settings = mux_settings(config)
            if not settings.enabled or len(self.hosts) < 2:
                return  # one host: its task opens it
            connections = {
                key: MuxConnection(**kw, config=config) for key, kw in self.hosts.items()
            }
            # Kept open to the end of the run: a master that persists for 0
            # seconds lives while held.
            self.opened.extend(connections.values())
            from .warmup import open_masters  # a run over one host needs none of it

            failed = open_masters(connections.values(), settings.masters_at_once)
            for key, connection in connections.items():
                if connection in failed:
                    self.failures[key] = failed[connection]


class MuxConnectionCall(ConnectionCall):  # type: ignore[misc]
    """A task call whose context is a ``MuxConnection`` (or a plain one when mux is off)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        #: The run this call belongs to.
        self.run_state: _Run = kwargs.pop("run_state")
        super().__init__(*args, **kwargs)

    def clone_data(self) -> dict[str, Any]:
        # invoke clones calls through clone_data (fabric's clone_kwargs is not
        # called): carry our fields, and the host, into the copy.
        data: dict[str, Any] = super().clone_data()
        data.update(init_kwargs=self.init_kwargs, run_state=self.run_state)
        return data

    # invoke 3 adds arguments (core_parse_result=...): accept whatever comes.
    def make_context(self, config: Any, *args: Any, **kwargs: Any) -> Connection:
        run = self.run_state
        if not mux_settings(config).enabled:
            connection = Connection(**dict(self.init_kwargs, config=config))
        else:
            run.start_masters(config)
            connection = MuxConnection(**dict(self.init_kwargs, config=config))
            failure = run.failures.get(_key(self.init_kwargs))
            if failure is not None:
                connection.remember_failure(failure)
        run.opened.append(connection)
        return connection


class MuxExecutor(Executor):  # type: ignore[misc]
    """Fabric's executor, giving tasks ``MuxConnection`` objects.

    Enable it for stock ``fab`` in ``fabric.yaml``::

        tasks:
          executor_class: fabric_mux.MuxExecutor

    Connections a run opened are closed when it ends; persisting masters
    stay up for the next run.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.run_state = _Run()

    def parameterize(self, call: Any, connection_init_kwargs: dict[str, Any]) -> Any:
        self.run_state.hosts.setdefault(_key(connection_init_kwargs), connection_init_kwargs)
        new_kwargs = dict(init_kwargs=connection_init_kwargs, run_state=self.run_state)
        return call.clone(into=MuxConnectionCall, with_=new_kwargs)

    def execute(self, *tasks: Any) -> Any:
        try:
            return super().execute(*tasks)
        finally:
            opened = self.run_state.opened
            while opened:
                opened.pop().close()
