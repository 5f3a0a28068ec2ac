"""Fabric's ``Connection`` attributes, each worked out when first read.

Fabric's constructor works all of them out at once from paramiko's reading of
ssh_config (``host``, ``user``, ``port``, ``gateway``...): milliseconds a host,
more with a big ssh_config, and a MuxConnection does not need them, since
OpenSSH reads ssh_config itself. Here each is worked out as Fabric would on its
first read, then kept. Assigning one works as on a stock Connection: the value
is then the caller's choice, told to ssh as if given to the constructor.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from paramiko import AutoAddPolicy, SSHClient

__all__ = ["Defaults", "FabricAttributes", "Given"]


class Given(NamedTuple):
    """The constructor's arguments, as the caller gave them (None: not given)."""

    user: str | None
    port: int | None
    gateway: Any
    forward_agent: bool | None
    connect_timeout: int | None
    connect_kwargs: dict[str, Any] | None


class Defaults(NamedTuple):
    """The config values a stock Connection reads in its constructor, read then too
    (a config changed later does not change a connection already made)."""

    user: str
    port: int
    forward_agent: bool
    connect_timeout: int | None

    @classmethod
    def of(cls, config: Any) -> Defaults:
        return cls(config.user, config.port, config.forward_agent, config.timeouts.connect)


def _attribute(name: str, doc: str) -> Any:
    def read(self: Any) -> Any:
        known = self._mux.fabric
        if name not in known:
            known[name] = getattr(self, f"_work_out_{name}")()
        return known[name]

    def write(self: Any, value: Any) -> None:
        self._mux.fabric[name] = value
        self._mux.assigned.add(name)

    return property(read, write, doc=doc)


class FabricAttributes:
    """The mixin: a connection with ``_mux.given`` (:class:`Given`), ``_mux.defaults``
    (:class:`Defaults`), ``_mux.fabric`` (where worked-out values are kept) and
    ``_mux.assigned`` (the names assigned to) gets Fabric's attributes from them."""

    _mux: Any
    original_host: str
    config: Any

    ssh_config = _attribute("ssh_config", "paramiko's reading of ssh_config for the host.")
    host = _attribute("host", "The host name (ssh_config's HostName, as Fabric reads it).")
    user = _attribute("user", "The remote user, as Fabric works it out.")
    port = _attribute("port", "The port, as Fabric works it out.")
    gateway = _attribute("gateway", "The gateway, as Fabric works it out.")
    forward_agent = _attribute("forward_agent", "Agent forwarding, as Fabric decides it.")
    connect_timeout = _attribute("connect_timeout", "As Fabric works it out.")
    connect_kwargs = _attribute("connect_kwargs", "As Fabric merges them.")
    client = _attribute("client", "paramiko's SSHClient, which a MuxConnection never uses.")

    def _work_out_ssh_config(self) -> Any:
        return self.config.base_ssh_config.lookup(self.original_host)

    def _work_out_host(self) -> str:
        return str(self.ssh_config.get("hostname", self.original_host))

    def _work_out_user(self) -> str:
        return str(self._mux.given.user or self.ssh_config.get("user", self._mux.defaults.user))

    def _work_out_port(self) -> Any:
        # As Fabric: a port given stays as given ("2201" too).
        return self._mux.given.port or int(self.ssh_config.get("port", self._mux.defaults.port))

    def _work_out_gateway(self) -> Any:
        given = self._mux.given.gateway
        return given if given is not None else self.get_gateway()  # type: ignore[attr-defined]

    def _work_out_forward_agent(self) -> bool:
        given = self._mux.given.forward_agent
        if given is not None:
            return bool(given)
        if "forwardagent" in self.ssh_config:
            return bool(self.ssh_config["forwardagent"] == "yes")
        return bool(self._mux.defaults.forward_agent)

    def _work_out_connect_timeout(self) -> int | None:
        timeout = self._mux.given.connect_timeout
        if timeout is None:
            timeout = self.ssh_config.get("connecttimeout", self._mux.defaults.connect_timeout)
        return int(timeout) if timeout is not None else None

    def _work_out_connect_kwargs(self) -> dict[str, Any]:
        merged: dict[str, Any] = self.resolve_connect_kwargs(  # type: ignore[attr-defined]
            self._mux.given.connect_kwargs
        )
        return merged

    def _work_out_client(self) -> SSHClient:
        client = SSHClient()
        client.set_missing_host_key_policy(AutoAddPolicy())
        return client
