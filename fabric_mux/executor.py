"""``MuxExecutor``: stock ``fab`` hands every task a ``MuxConnection``."""

from __future__ import annotations

from typing import Any

from fabric import Connection, Executor
from fabric.tasks import ConnectionCall

from .config import mux_settings
from .connection import MuxConnection

__all__ = ["MuxConnectionCall", "MuxExecutor"]


class MuxConnectionCall(ConnectionCall):  # type: ignore[misc]
    """A task call whose context is a ``MuxConnection`` (or a plain one when mux is off)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        #: Where the executor collects the connections it must close at the end.
        self.opened: list[Connection] = kwargs.pop("opened")
        super().__init__(*args, **kwargs)

    def clone_data(self) -> dict[str, Any]:
        # invoke clones calls through clone_data (fabric's clone_kwargs is not
        # called): carry our fields, and the host, into the copy.
        data: dict[str, Any] = super().clone_data()
        data.update(init_kwargs=self.init_kwargs, opened=self.opened)
        return data

    # invoke 3 adds arguments (core_parse_result=...): accept whatever comes.
    def make_context(self, config: Any, *args: Any, **kwargs: Any) -> Connection:
        cls = MuxConnection if mux_settings(config).enabled else Connection
        connection = cls(**dict(self.init_kwargs, config=config))
        self.opened.append(connection)
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
        self.opened: list[Connection] = []

    def parameterize(self, call: Any, connection_init_kwargs: dict[str, Any]) -> Any:
        new_kwargs = dict(init_kwargs=connection_init_kwargs, opened=self.opened)
        return call.clone(into=MuxConnectionCall, with_=new_kwargs)

    def execute(self, *tasks: Any) -> Any:
        try:
            return super().execute(*tasks)
        finally:
            while self.opened:
                self.opened.pop().close()
