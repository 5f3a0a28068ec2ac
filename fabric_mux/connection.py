"""``MuxConnection``: a ``fabric.Connection`` whose sessions all go through one OpenSSH master."""

from __future__ import annotations

import functools
import os
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fabric import Connection
from fabric.config import Config
from fabric.connection import derive_shorthand
from fabric.transfer import Transfer
from fabric.util import get_local_user
from invoke.context import Context

from .argv import SshTarget, connect_kwargs_options, parse_resolved_config
from .config import MuxSettings, mux_settings
from .controldir import find_control_dir, prepare_control_dir
from .exceptions import BadForward, MasterStartFailed, MuxError, TransferNeedsSftp
from .fabricattrs import Defaults, FabricAttributes, Given
from .gateway import JumpHop, Route, as_hop, hop_errors_path, jump_hops, proxy_command
from .master import ForwardSpec, Master
from .protocol import FWD_LOCAL, FWD_REMOTE
from .resolve import find_ssh, resolve_config
from .runners import MuxRemote
from .session import Session, open_session
from .upstream import runtime_ssh_path

if TYPE_CHECKING:
    from paramiko import SFTPClient

    from .askpass import PromptAnswers

__all__ = ["MuxConnection"]


@dataclass
class _MuxState:
    """A connection's own state: what it read at creation and what it holds now."""

    #: The ``mux`` settings, read once (the config may be shared with threads
    #: making stock Connections, which write to it).
    settings: MuxSettings
    #: What the caller gave explicitly (``user@host:port`` included).
    given: Given
    #: The config's user, port... as they were when the connection was made.
    defaults: Defaults
    config_gateway: Any
    #: Fabric's attributes, each worked out on first read (see fabricattrs).
    fabric: dict[str, Any] = field(default_factory=dict)
    #: Those of them the caller assigned to: explicit, as if given.
    assigned: set[str] = field(default_factory=set)
    #: The process this state belongs to: a forked child makes its own.
    pid: int = field(default_factory=os.getpid)
    #: The route's master, once known (kept after close, for control_path and master_pid).
    master: Master | None = None
    #: Between open() and close().
    opened: bool = False
    #: Whether we hold the master open (``persist`` 0: it lives while held).
    held: bool = False
    hop: MuxConnection | None = None
    #: A gateway the caller made is theirs to close; hops we made are ours.
    hop_owned: bool = False
    sessions: weakref.WeakSet[Session] = field(default_factory=weakref.WeakSet)
    #: Sessions running unattended (``disown=True``) until the connection closes.
    disowned: list[Session] = field(default_factory=list)
    sftp: SFTPClient | None = None
    #: Why this connection's master could not start when it was opened in a
    #: group; raised again on its next use (see fabric_mux.warmup).
    start_error: BaseException | None = None
    #: Put before each line of output, in a parallel run (``[web1] ``).
    output_prefix: str | None = None

    def fresh(self) -> _MuxState:
        """The same settings, holding nothing (for a forked child)."""
        return _MuxState(
            self.settings,
            self.given,
            self.defaults,
            self.config_gateway,
            dict(self.fabric),
            set(self.assigned),
        )


@functools.lru_cache(maxsize=1)
def _local_user() -> str:
    """Who we are, looked up once (it reads /etc/passwd, which may be out of reach
    later: no descriptor left)."""
    return str(get_local_user())


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
    _mux_state: _MuxState

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
        self._set(_config=config)
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
        state = _MuxState(
            settings=mux_settings(config),
            given=Given(user, port, gateway, forward_agent, connect_timeout, connect_kwargs),
            defaults=Defaults.of(config),
            config_gateway=config.gateway,
        )
        object.__setattr__(self, "_mux_state", state)

    @property
    def _mux(self) -> _MuxState:
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
        several hosts print at once (``[web1] ``); None: output as it comes."""
        return self._mux.output_prefix

    @output_prefix.setter
    def output_prefix(self, prefix: str | None) -> None:
        self._mux.output_prefix = prefix

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
        """The given ``connect_kwargs`` (else the config's), with every
        ``key_filename`` of the config, the given ones and ``more_keys``."""
        given = dict(connect_kwargs or {})
        from_config = dict(self.config.connect_kwargs)
        merged = dict(given or from_config)
        keys: list[str] = []
        for value in (
            from_config.get("key_filename", []),
            given.get("key_filename", []),
            *more_keys,
        ):
            keys.extend([value] if isinstance(value, str) else value)
        if keys:
            merged["key_filename"] = keys
        return merged

    def ssh_target(self) -> SshTarget:
        """What this connection tells ``ssh``: the alias plus what Fabric set explicitly.

        Whatever Fabric would only read from ssh_config is left to OpenSSH,
        which reads the same file (and understands all of it: Match,
        certificates...). Fabric's own config values (``user``, ``port``,
        ``forward_agent``) come after ssh_config, as in Fabric: only to find
        whether ssh_config sets them is paramiko's lookup needed.
        """
        state = self._mux
        defaults = state.defaults
        config = self.config
        user = self._explicit("user")
        if user is None and defaults.user != _local_user() and "user" not in self.ssh_config:
            user = defaults.user
        port = self._explicit("port")
        if port is None and int(defaults.port) != 22 and "port" not in self.ssh_config:
            port = defaults.port
        forward_agent = self._explicit("forward_agent")
        if (
            forward_agent is None
            and defaults.forward_agent
            and "forwardagent" not in self.ssh_config
        ):
            forward_agent = True
        if "connect_kwargs" in state.fabric:  # read (and maybe changed) or assigned
            kwargs = dict(state.fabric["connect_kwargs"])
        else:
            kwargs = self._given_connect_kwargs()
        keys = kwargs.get("key_filename") or []
        keys = [keys] if isinstance(keys, str) else list(keys)
        if keys:
            # ssh reads ssh_config's own identities; a stock Connection made with
            # this config has copied them into its connect_kwargs: leave those.
            from_ssh_config = set(self.ssh_config.get("identityfile", []))
            keys = [key for key in keys if key not in from_ssh_config]
        timeout = self._explicit("connect_timeout") or kwargs.get("timeout")
        options: tuple[str, ...] = ()
        if "host" in state.assigned:
            options += (f"HostName={self.host}",)
        if forward_agent is not None:
            options += (f"ForwardAgent={'yes' if forward_agent else 'no'}",)
        if self._explicit("gateway") is False:  # no ProxyJump or ProxyCommand from ssh_config
            options += ("ProxyCommand=none",)
        return SshTarget(
            destination=self.original_host,
            user=user,
            port=int(port) if port is not None else None,
            config_file=runtime_ssh_path(config) or config.ssh_config_path,
            identity_files=tuple(str(key) for key in keys),
            connect_timeout=int(timeout) if timeout else None,
            options=options + connect_kwargs_options(kwargs) + state.settings.ssh_options,
        )

    def _route(self, ssh: str, target: SshTarget) -> Route:
        """How this connection reaches its host, with Fabric's precedence:
        ``gateway=`` > ssh_config ProxyJump > ProxyCommand > ``config.gateway``.

        ssh_config is read as OpenSSH resolves it (``ssh -G``), not as paramiko does.
        """
        if self._explicit("gateway") is not None:
            gateway = self._explicit("gateway")
        else:
            resolved = parse_resolved_config(resolve_config(ssh, target))
            hops = jump_hops(resolved.get("proxyjump", "none"))
            if hops:
                return self._jump_chain(hops)
            if resolved.get("proxycommand", "none") != "none":
                return None  # OpenSSH runs the user's ProxyCommand for the master itself
            gateway = self._mux.config_gateway
        if not gateway:
            return None
        if isinstance(gateway, str):
            return gateway
        return as_hop(gateway, self.config, MuxConnection)

    def _jump_chain(self, hops: list[JumpHop]) -> Route:
        hop: MuxConnection | None = None
        for jump in hops:
            if jump.host == self.original_host:
                return None  # a wildcard ProxyJump that names this very host
            # The first hop follows its own ssh_config; later ones go through the previous.
            hop = MuxConnection(
                jump.host, user=jump.user, port=jump.port, config=self.config, gateway=hop
            )
        return hop

    # -- the master ------------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        state = self._mux
        return state.opened and state.master is not None and state.master.alive() is not None

    @property
    def mux_master(self) -> Master:
        """The route's :class:`~fabric_mux.master.Master` (opens the connection)."""
        state = self._mux
        if state.opened and state.master is not None:
            return state.master
        return self._open()

    def route_master(self, make_folder: bool = True) -> Master:
        """The :class:`~fabric_mux.master.Master` of this connection's route.

        Nothing is started: this only works out where the socket is (a
        gateway's too), as ``fabric-mux check`` needs. ``make_folder=False``
        does not make the control folder either.
        """
        state = self._mux
        settings = state.settings
        ssh = find_ssh(settings.ssh_path)
        if make_folder:
            control_dir = prepare_control_dir(settings.control_dir)
        else:
            control_dir = find_control_dir(settings.control_dir)
        target = self.ssh_target()
        route = self._route(ssh, target)
        state.hop = route if isinstance(route, MuxConnection) else None
        state.hop_owned = state.hop is not None and state.hop is not self._explicit("gateway")
        if isinstance(route, str):
            target = target._replace(options=(f"ProxyCommand={route}", *target.options))
        elif route is not None:
            hop_path = route.route_master(make_folder).control_path
            command = proxy_command(ssh, route.original_host, hop_path)
            target = target._replace(options=(f"ProxyCommand={command}", *target.options))
        return Master.for_target(
            ssh,
            target,
            control_dir,
            server_alive=settings.server_alive,
            # Fabric's connect timeout (fab -t) over ours; ssh_config's over both.
            connect_timeout=self.config.timeouts.connect or settings.connect_timeout,
            max_sessions=settings.max_sessions,
            reply_timeout=settings.reply_timeout,
            connect_retries=settings.connect_retries,
        )

    def open(self) -> None:
        """Find the route's live master or start one (one login, under a lock).

        A gateway's master is opened first; this master then reaches its host
        through it.
        """
        if not self._mux.opened:
            self._open()

    def _open(self) -> Master:
        state = self._mux
        if state.start_error is not None:
            raise state.start_error
        master = self.route_master()
        self._reconnect(master)
        if not state.settings.persists:
            master.hold()
            state.held = True
        state.master = master
        state.opened = True
        return master

    def remember_failure(self, error: BaseException | None) -> None:
        """Make the next open raise ``error`` (None: try again), rather than log in again."""
        self._mux.start_error = error

    def _reconnect(self, master: Master) -> None:
        """Bring the route's master back, its gateways' first."""
        hop = self._mux.hop
        if hop is None:
            self._ensure(master)
            return
        if not hop._mux.opened or hop._mux.master is None:
            hop.open()  # a first open brings the hop's own gateways up too
        else:
            hop._reconnect(hop._mux.master)
        self._ensure_through(master, hop)

    def _ensure(self, master: Master) -> int:
        return master.ensure(self.mux.persist, answer=lambda: self._prompt_answers(master))

    def _prompt_answers(self, master: Master) -> PromptAnswers | None:
        """Who answers the master's prompts: Fabric's secrets, then the user.

        The password (``connect_kwargs["password"]``, ``fab
        --prompt-for-login-password``) answers only this route's own password
        prompts, the key passphrase only this route's own identity files; each
        once, as a second prompt means it was wrong and repeating it could
        lock the account. Anything else (a one-time code, a new host key's
        question) is asked on the user's terminal, when there is one.
        """
        # Imported here: called only when a master starts.
        from . import askpass

        kwargs = self._given_connect_kwargs()
        password = kwargs.get("password")
        passphrase = kwargs.get("passphrase")
        terminal = askpass.ask_on_terminal if askpass.terminal_available() else None
        if not (password or passphrase or terminal):
            return None
        user, host = master.prompt_host()
        return askpass.PromptAnswers(
            user=user,
            host=host,
            identity_files=master.identity_files(),
            password=str(password) if password else None,
            passphrase=str(passphrase) if passphrase else None,
            terminal=terminal,
        )

    def _ensure_through(self, master: Master, hop: MuxConnection) -> int:
        """Start this master through ``hop``; a failure says what the hop said."""
        errors = hop_errors_path(hop.mux_master.control_path)
        try:
            offset = os.path.getsize(errors)
        except FileNotFoundError:
            offset = 0
        try:
            return self._ensure(master)
        except MasterStartFailed as exc:
            # The hop's own master is up, so it let us in: what failed is the
            # way on from it to this host, and the forward's error says why.
            try:
                with open(errors, "rb") as log:
                    log.seek(offset)
                    said = log.read().decode("utf-8", "replace")
            except FileNotFoundError:
                said = ""
            raise type(exc)(
                f"{self.original_host} (via gateway {hop.original_host})",
                exc.argv,
                exc.exit_code,
                said + exc.stderr,
                exc.note,
            ) from None

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
            revive=lambda: self._reconnect(master),
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
        if state.hop is not None and state.hop_owned:
            state.hop.close()
        state.hop = None

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
        (also on an exception). A busy port raises :class:`ForwardFailed` at
        once. Yields the local port (the one chosen, for ``local_port=0``).
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
            self._reconnect(master)  # before the master's lock: a login may follow
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
            return transfer.put(self, local, remote, preserve_mode, progress)
        except TransferNeedsSftp:
            return Transfer(self).put(local, remote, preserve_mode=preserve_mode)

    def get(
        self, remote: Any, local: Any = None, preserve_mode: bool = True, progress: Any = None
    ) -> Any:
        """Fabric's ``get``, in one session; ``progress`` as for :meth:`put`."""
        from . import transfer

        try:
            return transfer.get(self, remote, local, preserve_mode, progress)
        except TransferNeedsSftp:
            return Transfer(self).get(remote, local, preserve_mode=preserve_mode)

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
