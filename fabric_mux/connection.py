"""``MuxConnection``: a ``fabric.Connection`` whose sessions all go through one OpenSSH master."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from fabric import Connection
from fabric.config import Config
from fabric.connection import derive_shorthand, opens
from fabric.util import get_local_user

from .argv import SshTarget
from .config import MuxSettings, mux_settings
from .exceptions import MuxError, SessionRefused
from .master import Master, find_ssh, prepare_control_dir
from .protocol import MasterUnavailable, MuxClient, RequestDenied
from .runners import MuxRemote, MuxRemoteShell

__all__ = ["MuxConnection"]

#: Seconds to wait before each retry of a refused session (about 2 s in all).
_REFUSAL_BACKOFF = (0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.5, 0.5, 0.5)


class MuxConnection(Connection):  # type: ignore[misc]
    """A :class:`fabric.Connection` that runs everything through an OpenSSH master.

    Same constructor as ``Connection``. The first operation finds the route's
    live master or starts one with the system ``ssh`` (all authentication
    stays in OpenSSH); every session after that is opened on the master over
    OpenSSH's multiplexing protocol, with no ``ssh`` process and no login.
    """

    # Declared on the class: invoke's DataProxy turns writes to attributes it
    # does not know into config writes.
    #: Path of the master's control socket (``str``), once opened.
    control_path: str | None = None
    #: pid of the master process, once opened.
    master_pid: int | None = None
    _mux_master: Master | None = None
    _mux_settings: MuxSettings | None = None
    _mux_held = False
    _mux_user: str | None = None
    _mux_port: int | None = None
    _mux_gateway_given = False
    _mux_clients: set[MuxClient] | None = None
    _mux_lock: threading.Lock | None = None

    def __init__(
        self,
        host: str,
        user: str | None = None,
        port: int | None = None,
        config: Config | None = None,
        gateway: Any = None,
        forward_agent: bool | None = None,
        connect_timeout: int | None = None,
        connect_kwargs: dict[str, Any] | None = None,
        inline_ssh_env: bool | None = None,
    ) -> None:
        shorthand = derive_shorthand(host)
        super().__init__(
            host,
            user=user,
            port=port,
            config=config,
            gateway=gateway,
            forward_agent=forward_agent,
            connect_timeout=connect_timeout,
            connect_kwargs=connect_kwargs,
            inline_ssh_env=inline_ssh_env,
        )
        self._mux_user = user or shorthand["user"]
        self._mux_port = port or shorthand["port"]
        self._mux_gateway_given = gateway is not None
        self._mux_clients = set()
        self._mux_lock = threading.Lock()

    # -- what ssh is told ------------------------------------------------------

    @property
    def mux(self) -> MuxSettings:
        """This connection's ``mux`` settings (config defaults filled in)."""
        if self._mux_settings is None:
            self._mux_settings = mux_settings(self.config)
        return self._mux_settings

    def ssh_target(self) -> SshTarget:
        """What this connection tells ``ssh``: the alias plus what Fabric set explicitly.

        Whatever Fabric only read from ssh_config is left to OpenSSH, which
        reads the same file (and understands all of it: Match, certificates...).
        """
        user = self._mux_user
        if user is None and "user" not in self.ssh_config and self.config.user != get_local_user():
            user = self.config.user
        port = self._mux_port
        if port is None and "port" not in self.ssh_config and int(self.config.port) != 22:
            port = int(self.config.port)
        from_ssh_config = set(self.ssh_config.get("identityfile", []))
        keys = self.connect_kwargs.get("key_filename") or []
        if isinstance(keys, str):
            keys = [keys]
        identities = tuple(str(key) for key in keys if key not in from_ssh_config)
        timeout = self.connect_timeout or self.connect_kwargs.get("timeout")
        return SshTarget(
            destination=self.original_host,
            user=user,
            port=port,
            config_file=self.config._runtime_ssh_path or self.config.ssh_config_path,
            identity_files=identities,
            connect_timeout=int(timeout) if timeout else None,
            forward_agent=bool(self.forward_agent),
            options=self._gateway_options() + self.mux.ssh_options,
        )

    def _gateway_options(self) -> tuple[str, ...]:
        gateway = self.gateway
        if gateway is False:
            return ("ProxyCommand=none", "ProxyJump=none")
        if not self._mux_gateway_given and "proxyjump" in self.ssh_config:
            return ()  # OpenSSH reads the same ProxyJump from the same file
        if not self._mux_gateway_given and "proxycommand" in self.ssh_config:
            return ()
        if isinstance(gateway, str):
            return (f"ProxyCommand={gateway}",)
        if gateway:
            raise MuxError(
                f"{self.original_host}: a Connection as gateway is not supported yet; "
                "use ProxyJump in ssh_config or a ProxyCommand string"
            )
        return ()

    # -- the master ------------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        master = self._mux_master
        return master is not None and master.alive() is not None

    @property
    def mux_master(self) -> Master:
        """The route's :class:`~fabric_mux.master.Master` (opens the connection)."""
        if self._mux_master is None:
            self.open()
        assert self._mux_master is not None
        return self._mux_master

    def open(self) -> None:
        """Find the route's live master or start one (one login, under a lock)."""
        if self._mux_master is not None:
            return
        settings = self.mux
        ssh = find_ssh(settings.ssh_path)
        control_dir = prepare_control_dir(settings.control_dir)
        master = Master.for_target(
            ssh,
            self.ssh_target(),
            control_dir,
            server_alive=settings.server_alive,
            connect_timeout=settings.connect_timeout,
            max_sessions=settings.max_sessions,
            reply_timeout=settings.reply_timeout,
        )
        self.master_pid = master.ensure(settings.persist)
        if not settings.persists:
            master.hold()
            self._mux_held = True
        self.control_path = master.control_path
        self._mux_master = master

    def open_session(self, command: str, fds: Sequence[int], **flags: Any) -> MuxClient:
        """Open a session on the master; a dead or stale master is replaced once.

        A refusal by the server is retried with backoff: sshd frees a closed
        session a moment after our side sees it end, so a host busy near its
        ``MaxSessions`` refuses briefly, not for good.
        """
        master = self.mux_master
        for delay in (*_REFUSAL_BACKOFF, None):
            try:
                client = master.client()
            except MasterUnavailable:
                self.master_pid = master.ensure(self.mux.persist)
                client = master.client()
            try:
                client.open_session(command, fds, **flags)
            except RequestDenied as exc:
                client.close()
                if delay is None:
                    raise SessionRefused(self.original_host, exc.reason) from None
                time.sleep(delay)
                continue
            except BaseException:
                client.close()
                raise
            break
        assert self._mux_clients is not None and self._mux_lock is not None
        with self._mux_lock:
            self._mux_clients.add(client)
        return client

    def session_closed(self, client: MuxClient) -> None:
        """A runner is done with its session."""
        assert self._mux_clients is not None and self._mux_lock is not None
        with self._mux_lock:
            self._mux_clients.discard(client)
        client.close()

    def close(self) -> None:
        """End this connection's sessions; a persisting master keeps running."""
        if self._mux_clients is not None and self._mux_lock is not None:
            with self._mux_lock:
                clients, self._mux_clients = list(self._mux_clients), set()
            for client in clients:
                client.close()
        if self._mux_held and self._mux_master is not None:
            self._mux_master.release()
            self._mux_held = False
        self._mux_master = None
        super().close()

    # -- operations ------------------------------------------------------------

    def _remote_runner(self) -> MuxRemote:
        return MuxRemote(context=self, inline_env=self.inline_ssh_env)

    def create_session(self) -> Any:
        raise MuxError("MuxConnection has no paramiko sessions: use run(), sudo() or shell()")

    @opens  # type: ignore[untyped-decorator]
    def shell(self, **kwargs: Any) -> Any:
        """An interactive login shell on a pty, as ``fabric.Connection.shell``."""
        allowed = ("encoding", "env", "in_stream", "replace_env", "watchers")
        options = dict(self.config.global_defaults()["run"])
        for key in allowed:
            options[key] = kwargs.pop(key, self.config.run[key])
        if kwargs:
            raise TypeError(f"shell() got unexpected keyword arguments: {list(kwargs)!r}")
        options["pty"] = True
        return MuxRemoteShell(context=self).run(command=None, **options)
