"""``MuxConnection``: a ``fabric.Connection`` whose sessions all go through one OpenSSH master."""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from fabric import Connection
from fabric.config import Config
from fabric.connection import derive_shorthand
from fabric.transfer import Transfer
from invoke.context import Context

from .argv import SshTarget
from .config import MuxSettings, mux_settings
from .connstate import MuxState
from .exceptions import BadForward, EmptyHostList, MuxError, TransferNeedsSftp
from .fabricattrs import Defaults, FabricAttributes, Given
from .forwards import ForwardSpec
from .hostlist import names_no_host
from .master import Master
from .protocol import FWD_LOCAL, FWD_REMOTE
from .route import Route
from .runners import MuxRemote
from .served import check_env_passed
from .session import Session, open_session
from .target import Explicit, Secrets, fabric_target, merged_connect_kwargs
from .upstream import set_attributes

if TYPE_CHECKING:
    from paramiko import SFTPClient

    from .screen import LineSink

__all__ = ["MuxConnection"]


class MuxConnection(FabricAttributes, Connection):  # type: ignore[misc]
    """A :class:`fabric.Connection` that runs everything through an OpenSSH master.

    Same constructor as ``Connection``. The first operation finds the route's
    live master or starts one with the system ``ssh`` (all authentication
    stays in OpenSSH); every session after that is opened on the master over
    OpenSSH's multiplexing protocol, with no ``ssh`` process and no login.
    """

    # Fabric assigns this in __init__; without a real attribute the assignment
    # would write the shared config (invoke's DataProxy turns writes to unknown
    # attributes into config writes), which invoke rebuilds on every write, so
    # other threads reading it meanwhile would see it empty.
    inline_ssh_env: bool | None = None
    # Set with object.__setattr__ in __init__, past the DataProxy.
    _mux_state: MuxState

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
        # Fabric's constructor, but for the attributes that come from paramiko's
        # ssh_config lookup: those are worked out when first read.
        Context.__init__(self, config=config)
        if config is None:
            config = Config()
        elif not isinstance(config, Config):
            config = config.clone(into=Config)
        set_attributes(self, _config=config)
        if not isinstance(host, str) or names_no_host(host):
            # paramiko's ssh_config lookup would fail on it with a TypeError.
            raise EmptyHostList(f"{host!r} names no host: a connection needs one")
        shorthand = derive_shorthand(host)
        both = "You supplied the {} via both shorthand and kwarg! Please pick one."
        if shorthand["user"] is not None:
            if user is not None:
                raise ValueError(both.format("user"))
            user = shorthand["user"]
        if shorthand["port"] is not None:
            if port is not None:
                raise ValueError(both.format("port"))
            port = shorthand["port"]
        self.original_host = shorthand["host"]
        self.transport = None
        self.inline_ssh_env = config.inline_ssh_env if inline_ssh_env is None else inline_ssh_env
        state = MuxState(
            settings=mux_settings(config),
            given=Given(user, port, gateway, forward_agent, connect_timeout, connect_kwargs),
            defaults=Defaults.of(config),
            config_gateway=config.gateway,
        )
        object.__setattr__(self, "_mux_state", state)

    @property
    def _mux(self) -> MuxState:
        state = self._mux_state
        if state.pid != os.getpid():
            # A forked child: the parent's sessions and holds are not ours to
            # touch (they are let go of at the fork); start from nothing.
            state = state.fresh()
            object.__setattr__(self, "_mux_state", state)
        return state

    @property
    def output_prefix(self) -> str | None:
        """What each line of this connection's command output starts with, when
        several hosts print at once (``"[web1] "``); None: output as it comes."""
        return self._mux.output_prefix

    @output_prefix.setter
    def output_prefix(self, prefix: str | None) -> None:
        self._mux.output_prefix = prefix

    @property
    def output_sink(self) -> LineSink | None:
        """Where this connection's command output goes a whole line at a time,
        instead of the screen (a parallel run's gathered output); None: the screen."""
        return self._mux.output_sink

    @output_sink.setter
    def output_sink(self, sink: LineSink | None) -> None:
        self._mux.output_sink = sink

    def show_output(self, prefix: str | None, sink: LineSink | None) -> None:
        """Set :attr:`output_prefix` and :attr:`output_sink` at once. (A method, not
        two assignments: an assignment to a Context goes through invoke's config
        proxy first, a good part of a millisecond, on every host of a fleet.)"""
        state = self._mux
        state.output_prefix, state.output_sink = prefix, sink

    @property
    def control_path(self) -> str | None:
        """Path of the master's control socket, once opened."""
        master = self._mux.master
        return master.control_path if master else None

    @property
    def master_pid(self) -> int | None:
        """pid of the master process, once opened."""
        master = self._mux.master
        return master.pid if master else None

    @property
    def master_forwards_agent(self) -> bool:
        """Whether the master forwards the agent, so sessions may ask for it (opens)."""
        return self.mux_master.forwards_agent

    def check_env_sent(self, names: Sequence[str]) -> None:
        """Make sure the master passes variables ``names`` of a session on to the
        server (a master passes only what its SendEnv names: fabric-mux's own,
        every name; the user's own, what their ssh_config says); opens.

        :raises EnvNotSent: naming those it would drop.
        """
        master = self.mux_master
        route = self._mux.route
        patterns, known = route.env_passed(master) if route is not None else (None, True)
        check_env_passed(self.original_host, master.control_path, patterns, known, names)

    def _identity(self) -> tuple[Any, ...]:
        # Fabric compares (host, user, port) as read from ssh_config. The alias
        # and what was given explicitly decide those, without reading
        # ssh_config; and two aliases of one address can be two routes
        # (another ProxyJump, HostKeyAlias, identity), which Group results,
        # keyed by connection, must keep apart.
        return (self.original_host, self._explicit("user"), self._explicit("port"))

    def _explicit(self, name: str) -> Any:
        """What the caller chose for attribute ``name``: assigned to it, else given to
        the constructor; None if neither (ssh_config and the config decide)."""
        state = self._mux
        if name in state.assigned:
            return state.fabric[name]
        return getattr(state.given, name, None)

    # -- what ssh is told ------------------------------------------------------

    def resolve_connect_kwargs(self, connect_kwargs: dict[str, Any] | None) -> dict[str, Any]:
        """Fabric's merge of ``connect_kwargs``, without writing into the config.

        Fabric's own version adds ``key_filename`` to the shared config's
        ``connect_kwargs``; invoke rebuilds the config on every write, which
        threads creating connections from one config must not see.
        """
        return self._merged_connect_kwargs(connect_kwargs, self.ssh_config.get("identityfile", []))

    @property
    def mux(self) -> MuxSettings:
        """This connection's ``mux`` settings (config defaults filled in)."""
        return self._mux.settings

    def _given_connect_kwargs(self) -> dict[str, Any]:
        """Fabric's merge of ``connect_kwargs`` without ssh_config's identities
        (OpenSSH reads those itself)."""
        return self._merged_connect_kwargs(self._mux.given.connect_kwargs)

    def _merged_connect_kwargs(
        self, connect_kwargs: dict[str, Any] | None, *more_keys: Any
    ) -> dict[str, Any]:
        return merged_connect_kwargs(self.config.connect_kwargs, connect_kwargs, *more_keys)

    def ssh_target(self) -> SshTarget:
        """What this connection tells ``ssh``: the alias plus what Fabric set explicitly
        (see :func:`~fabric_mux.route.fabric_target`)."""
        state = self._mux
        if "connect_kwargs" in state.fabric:  # read (and maybe changed) or assigned
            kwargs = dict(state.fabric["connect_kwargs"])
        else:
            kwargs = self._given_connect_kwargs()
        explicit = Explicit(
            user=self._explicit("user"),
            port=self._explicit("port"),
            forward_agent=self._explicit("forward_agent"),
            gateway=self._explicit("gateway"),
            connect_timeout=self._explicit("connect_timeout"),
            hostname=self.host if "host" in state.assigned else None,
        )
        return fabric_target(
            self.original_host,
            self.config,
            explicit,
            kwargs,
            lambda: self.ssh_config,
            state.settings,
            state.defaults,
        )

    def route(self) -> Route:
        """How this connection reaches its host (see :mod:`fabric_mux.route`);
        planned anew from the connection's settings now."""
        state = self._mux
        gateway = self._explicit("gateway")
        return Route(
            self.ssh_target(),
            self.config,
            settings=state.settings,
            secrets=Secrets.of(self._given_connect_kwargs()),
            gateway=gateway,
            config_gateway=state.config_gateway,
        )

    # -- the master ------------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        """Whether the connection is open and its master answers."""
        state = self._mux
        return state.opened and state.master is not None and state.master.alive() is not None

    @property
    def mux_master(self) -> Master:
        """The route's :class:`~fabric_mux.master.Master` (opens the connection): its
        ``control_path``, its ``pid``, and in ``requests`` what this process has asked of
        it (new sessions, alive checks, forwards), by kind."""
        state = self._mux
        if state.opened and state.master is not None:
            return state.master
        return self._open()

    def open(self) -> None:
        """Find the route's live master or start one (one login, under a lock).

        A gateway's master is opened first; this master then reaches its host
        through it.
        """
        if not self._mux.opened:
            self._open()

    def open_along(self, route: Route, master: Master, found: int | None = None) -> None:
        """:meth:`open`, along a ``route`` and its ``master`` planned just now from
        this connection (``route()``, ``route.master()``): planned once, not again.
        ``found``: the pid that answered on the master's socket just now."""
        if not self._mux.opened:
            self._open(route, master, found)

    def _open(
        self, route: Route | None = None, master: Master | None = None, found: int | None = None
    ) -> Master:
        state = self._mux
        if state.start_error is not None:
            raise state.start_error
        route = route if route is not None else self.route()
        master = route.up(master, found=found)
        if route.persist(master) == "1":
            master.hold()  # it lives while held
            state.held = True
        state.route = route
        state.master = master
        state.opened = True
        return master

    def remember_failure(self, error: BaseException | None) -> None:
        """Make the next open raise ``error`` (None: try again), rather than log in again."""
        self._mux.start_error = error

    def _reconnect(self) -> Master:
        """Bring the route's master back, its gateways' first, as the route's rule
        says now (the user's master gone: ours, unless their ssh_config lets one
        start at their path); the master used from then on."""
        state = self._mux
        route = state.route if state.route is not None else self.route()
        master = route.up()
        if master is not state.master:
            if state.held and state.master is not None:
                state.master.release()
                state.held = False
            if route.persist(master) == "1":
                master.hold()  # it lives while held
                state.held = True
        state.master = master
        return master

    # -- sessions --------------------------------------------------------------

    def open_session(self, command: str, fds: Sequence[int], **flags: Any) -> Session:
        """Open a session on the master whose stdin, stdout and stderr are ``fds``.

        Waits for one of the master's session slots (``mux.max_sessions``), at
        most ``mux.reply_timeout`` seconds; a dead or stale master is replaced.
        The session is closed with the connection, if not before.
        """
        failure = self._mux.start_error
        if failure is not None:  # e.g. the run was interrupted after this opened
            raise failure
        master = self.mux_master
        session = open_session(
            master,
            command,
            fds,
            flags,
            host=self.original_host,
            revive=self._reconnect,
        )
        self._mux.sessions.add(session)
        return session

    def disown_session(self, session: Session) -> None:
        """A session that runs on unattended (``disown=True``): it gives its slot
        back now, and ends when the connection closes."""
        session.disown()
        self._mux.disowned.append(session)

    def close(self) -> None:
        """End this connection's sessions; a persisting master keeps running."""
        state = self._mux
        if state.sftp is not None:
            state.sftp.close()
            state.sftp = None
        for session in [*state.sessions, *state.disowned]:
            session.close()
        state.disowned.clear()
        if state.held and state.master is not None:
            state.master.release()
            state.held = False
        state.opened = False

    # -- operations ------------------------------------------------------------

    def _remote_runner(self) -> MuxRemote:
        return MuxRemote(context=self, inline_env=self.inline_ssh_env)

    def sftp(self) -> SFTPClient:
        """A paramiko ``SFTPClient`` over an ``sftp`` subsystem session (memoized)."""
        state = self._mux
        if state.sftp is None:
            # Imported on first use: fab runs that move no files skip it.
            from .sftp import open_sftp

            state.sftp = open_sftp(self)
        return state.sftp

    @contextmanager
    def forward_local(
        self,
        local_port: int,
        remote_port: int | None = None,
        remote_host: str = "localhost",
        local_host: str = "localhost",
    ) -> Iterator[int]:
        """Forward ``local_host:local_port`` to ``remote_host:remote_port`` seen from the server.

        The master is listening when the block starts, and stops when it ends
        (also on an exception). A busy port raises
        :class:`~fabric_mux.exceptions.ForwardFailed` at once. Yields the local
        port (the one chosen, for ``local_port=0``).
        ``localhost`` listens on 127.0.0.1 only, as stock Fabric does: a port
        busy there is busy, whatever ``::1`` has.
        """
        listen = "127.0.0.1" if local_host == "localhost" else local_host
        spec = ForwardSpec(FWD_LOCAL, listen, local_port, remote_host, remote_port or local_port)
        with self._forward(spec) as port:
            yield port

    @contextmanager
    def forward_remote(
        self,
        remote_port: int,
        local_port: int | None = None,
        remote_host: str = "127.0.0.1",
        local_host: str = "localhost",
    ) -> Iterator[int]:
        """Forward the server's ``remote_host:remote_port`` to ``local_host:local_port`` here.

        ``remote_port=0`` lets the server choose; the block receives the port.
        """
        if not (local_port or remote_port):
            raise BadForward("forward_remote(0) needs a local_port to forward to")
        spec = ForwardSpec(
            FWD_REMOTE, remote_host, remote_port, local_host, local_port or remote_port
        )
        with self._forward(spec) as port:
            yield port

    @contextmanager
    def _forward(self, spec: ForwardSpec) -> Iterator[int]:
        master = self.mux_master
        if master.alive() is None:
            master = self._reconnect()  # before the master's lock: a login may follow
        with master.forward(spec) as port:
            yield port

    def put(
        self, local: Any, remote: Any = None, preserve_mode: bool = True, progress: Any = None
    ) -> Any:
        """Fabric's ``put``, in one session (see :mod:`fabric_mux.transfer`).

        ``progress``: a ``callback(done, total)``, or True for a bar when
        stderr is a terminal. Off by default.
        """
        from . import transfer  # imported on first use: most tasks only run commands

        try:
            target = self._in_sftp_folder(remote)
            result = transfer.put(self, local, target, preserve_mode, progress)
        except TransferNeedsSftp:
            return Transfer(self).put(local, remote, preserve_mode=preserve_mode)
        result.orig_remote = remote
        return result

    def get(
        self, remote: Any, local: Any = None, preserve_mode: bool = True, progress: Any = None
    ) -> Any:
        """Fabric's ``get``, in one session; ``progress`` as for :meth:`put`."""
        from . import transfer

        try:
            source = self._in_sftp_folder(remote) if remote else remote
            result = transfer.get(self, source, local, preserve_mode, progress)
        except TransferNeedsSftp:
            return Transfer(self).get(remote, local, preserve_mode=preserve_mode)
        result.orig_remote = remote
        return result

    def _in_sftp_folder(self, remote: Any) -> Any:
        """``remote`` in the folder that ``sftp().chdir()`` chose, as stock Fabric
        takes a relative path (and no path: the local name, there)."""
        sftp = self._mux.sftp
        folder = sftp.getcwd() if sftp is not None else None
        if not folder or (isinstance(remote, str) and remote.startswith("/")):
            return remote
        return posixpath.join(folder, remote or "")

    def remote_home(self) -> str:
        """The remote account's home, where relative paths land: asked once per master."""
        from . import transfer

        master = self.mux_master
        if master.remote_home is None:
            master.remote_home = transfer.remote_home(self)
        return master.remote_home

    def create_session(self) -> Any:
        raise MuxError("MuxConnection has no paramiko sessions: use run(), sudo() or shell()")

    def shell(self, **kwargs: Any) -> Any:
        """An interactive login shell on a pty, as ``fabric.Connection.shell``."""
        self.open()
        allowed = ("encoding", "env", "in_stream", "replace_env", "watchers")
        options = dict(self.config.global_defaults()["run"])
        for key in allowed:
            options[key] = kwargs.pop(key, self.config.run[key])
        if kwargs:
            raise TypeError(f"shell() got unexpected keyword arguments: {list(kwargs)!r}")
        # As documented for fabric's shell(): a pty, and no exception for a non-zero exit.
        options.update(pty=True, warn=True)
        return MuxRemote(context=self).run(command=None, **options)
