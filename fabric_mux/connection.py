"""``MuxConnection``: a ``fabric.Connection`` whose sessions all go through one OpenSSH master."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from fabric import Connection
from fabric.config import Config
from fabric.connection import derive_shorthand
from fabric.transfer import Transfer
from fabric.util import get_local_user

from . import askpass
from .argv import SshTarget, connect_kwargs_options, parse_resolved_config
from .config import MuxSettings, mux_settings
from .exceptions import ForwardFailed, MasterStartFailed, MuxError, SessionRefused
from .gateway import Route, as_hop, hop_errors_path, jump_hosts, proxy_command
from .master import Master, Slot, find_ssh, prepare_control_dir, resolve_config
from .protocol import FWD_LOCAL, FWD_REMOTE, MasterUnavailable, MuxClient, RequestDenied
from .runners import MuxRemote

if TYPE_CHECKING:
    from .askpass import PromptAnswers
    from .sftp import MuxSFTPClient

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
    _mux_clients: dict[MuxClient, Slot] | None = None
    _mux_disowned: list[MuxClient] = []  # noqa: RUF012 - replaced per instance in __init__
    _mux_lock: threading.Lock | None = None
    _mux_config_gateway: Any = None
    # Fabric assigns this in __init__; without a real attribute the assignment
    # would write the shared config, which invoke rebuilds on every write, so
    # other threads reading it meanwhile would see it empty.
    inline_ssh_env: bool | None = None
    _sftp: MuxSFTPClient | None = None
    _mux_hop: MuxConnection | None = None
    _mux_hop_owned = False

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
        # Read what open() needs now, once: the config may be shared with
        # threads creating stock Connections, which write to it.
        self._mux_settings = mux_settings(self.config)
        self._mux_config_gateway = self.config.gateway
        self._mux_user = user or shorthand["user"]
        self._mux_port = port or shorthand["port"]
        self._mux_gateway_given = gateway is not None
        self._mux_clients = {}
        self._mux_disowned = []
        self._mux_lock = threading.Lock()

    def _identity(self) -> tuple[Any, ...]:
        # Fabric compares (host, user, port); two aliases of one address can
        # still be two routes (another ProxyJump, HostKeyAlias, identity), and
        # Group results are keyed by connection: keep them apart.
        return (self.original_host, self.host, self.user, self.port)

    # -- what ssh is told ------------------------------------------------------

    def resolve_connect_kwargs(self, connect_kwargs: dict[str, Any] | None) -> dict[str, Any]:
        """Fabric's merge of ``connect_kwargs``, without writing into the config.

        Fabric's own version adds ``key_filename`` to the shared config's
        ``connect_kwargs``; invoke rebuilds the config on every write, which
        threads creating connections from one config must not see.
        """
        given = dict(connect_kwargs or {})
        from_config = dict(self.config.connect_kwargs)
        merged = dict(given or from_config)
        keys: list[str] = []
        for value in (
            from_config.get("key_filename", []),
            given.get("key_filename", []),
            self.ssh_config.get("identityfile", []),
        ):
            keys.extend([value] if isinstance(value, str) else value)
        if keys:
            merged["key_filename"] = keys
        return merged

    @property
    def mux(self) -> MuxSettings:
        """This connection's ``mux`` settings (config defaults filled in)."""
        assert self._mux_settings is not None  # read in __init__
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
            # gateway=False: no ProxyJump or ProxyCommand from ssh_config either.
            options=(("ProxyCommand=none",) if self.gateway is False else ())
            + connect_kwargs_options(self.connect_kwargs)
            + self.mux.ssh_options,
        )

    def _route(self, ssh: str, target: SshTarget) -> Route:
        """How this connection reaches its host, with Fabric's precedence:
        ``gateway=`` > ssh_config ProxyJump > ProxyCommand > ``config.gateway``.

        ssh_config is read as OpenSSH resolves it (``ssh -G``), not as paramiko does.
        """
        if self._mux_gateway_given:
            gateway = self.gateway
        else:
            resolved = parse_resolved_config(resolve_config(ssh, target))
            proxyjump = resolved.get("proxyjump", "none")
            if proxyjump != "none":
                return self._jump_chain(jump_hosts(proxyjump))
            if resolved.get("proxycommand", "none") != "none":
                return None  # OpenSSH runs the user's ProxyCommand for the master itself
            gateway = self._mux_config_gateway
        if not gateway:
            return None
        if isinstance(gateway, str):
            return gateway
        return as_hop(gateway, self.config, MuxConnection)

    def _jump_chain(self, hosts: list[str]) -> Route:
        hop: MuxConnection | None = None
        for host in hosts:
            if derive_shorthand(host)["host"] == self.original_host:
                return None  # a wildcard ProxyJump that names this very host
            # The first hop follows its own ssh_config; later ones go through the previous.
            hop = MuxConnection(host, config=self.config, gateway=hop)
        return hop

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

    def route_master(self) -> Master:
        """The :class:`~fabric_mux.master.Master` of this connection's route.

        Nothing is started: this only works out where the socket is (a
        gateway's too), as ``fabric-mux check`` needs.
        """
        settings = self.mux
        ssh = find_ssh(settings.ssh_path)
        control_dir = prepare_control_dir(settings.control_dir)
        target = self.ssh_target()
        route = self._route(ssh, target)
        self._mux_hop = route if isinstance(route, MuxConnection) else None
        # A gateway the caller made is theirs to close; hops we made are ours.
        self._mux_hop_owned = self._mux_hop is not None and self._mux_hop is not self.gateway
        if isinstance(route, str):
            target = target._replace(options=(f"ProxyCommand={route}", *target.options))
        elif route is not None:
            hop_path = route.route_master().control_path
            command = proxy_command(ssh, route.original_host, hop_path)
            target = target._replace(options=(f"ProxyCommand={command}", *target.options))
        return Master.for_target(
            ssh,
            target,
            control_dir,
            server_alive=settings.server_alive,
            connect_timeout=settings.connect_timeout,
            max_sessions=settings.max_sessions,
            reply_timeout=settings.reply_timeout,
            connect_retries=settings.connect_retries,
        )

    def open(self) -> None:
        """Find the route's live master or start one (one login, under a lock).

        A gateway's master is opened first; this master then reaches its host
        through it.
        """
        if self._mux_master is not None:
            return
        master = self.route_master()
        self._reconnect(master)
        if not self.mux.persists:
            master.hold()
            self._mux_held = True
        self.control_path = master.control_path
        self._mux_master = master

    def _ensure(self, master: Master) -> int:
        return master.ensure(self.mux.persist, answer=self._prompt_answers(master))

    def _prompt_answers(self, master: Master) -> PromptAnswers | None:
        """Who answers the master's prompts: Fabric's secrets, then the user.

        The password (``connect_kwargs["password"]``, ``fab
        --prompt-for-login-password``) answers only this route's own password
        prompts, the key passphrase only this route's own identity files; each
        once, as a second prompt means it was wrong and repeating it could
        lock the account. Anything else (a one-time code, a new host key's
        question) is asked on the user's terminal, when there is one.
        """
        password = self.connect_kwargs.get("password")
        passphrase = self.connect_kwargs.get("passphrase")
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
        assert hop.control_path is not None
        errors = hop_errors_path(hop.control_path)
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
            ) from None

    def open_session(self, command: str, fds: Sequence[int], **flags: Any) -> MuxClient:
        """Open a session on the master; pair it with :meth:`session_closed`.

        Waits for one of the master's session slots (``mux.max_sessions``), at
        most ``mux.reply_timeout`` seconds. A dead or stale master is replaced.
        A refusal by the server lowers the slots to what it allows and is
        retried with backoff: sshd also frees a closed session a moment after
        our side sees it end.
        """
        master = self.mux_master
        timeout = self.mux.reply_timeout
        slot = master.sessions.take(timeout)
        if slot is None:
            raise SessionRefused(
                self.original_host,
                f"no session slot came free in {timeout} s "
                f"({master.sessions.used} of {master.sessions.limit} in use)",
            )
        try:
            client = self._open_on(master, slot, command, fds, flags)
        except BaseException:
            slot.release()
            raise
        master.sessions.opened()
        assert self._mux_clients is not None and self._mux_lock is not None
        with self._mux_lock:
            self._mux_clients[client] = slot
        return client

    def _open_on(
        self,
        master: Master,
        slot: Slot,
        command: str,
        fds: Sequence[int],
        flags: dict[str, Any],
    ) -> MuxClient:
        for delay in (*_REFUSAL_BACKOFF, None):
            client = self._control(master)
            try:
                client.open_session(command, fds, **flags)
                return client
            except MasterUnavailable:
                # It went away between our connect and its answer (exiting,
                # or its server stopped answering): start anew and try again.
                client.close()
                if delay is None:
                    raise
                self._reconnect(master)
            except RequestDenied as exc:
                client.close()
                if delay is None or not master.sessions.refused(slot, self.mux.reply_timeout):
                    raise SessionRefused(self.original_host, exc.reason) from None
                time.sleep(delay)
            except BaseException:
                client.close()
                raise
        raise AssertionError("unreachable")

    def disown_session(self, client: MuxClient) -> None:
        """A session that runs on unattended (``disown=True``): it gives its
        slot back and ends when the connection closes."""
        assert self._mux_clients is not None and self._mux_lock is not None
        with self._mux_lock:
            slot = self._mux_clients.pop(client, None)
            self._mux_disowned.append(client)
        if slot is not None:
            slot.release()

    def session_is_open(self, client: MuxClient) -> bool:
        """Whether ``client`` is a session of ours not yet ended by us."""
        assert self._mux_clients is not None
        return client in self._mux_clients

    def session_closed(self, client: MuxClient) -> None:
        """End a session from :meth:`open_session` (once; later calls do nothing)."""
        assert self._mux_clients is not None and self._mux_lock is not None
        with self._mux_lock:
            slot = self._mux_clients.pop(client, None)
        if slot is not None:
            client.close()
            slot.release()

    def close(self) -> None:
        """End this connection's sessions; a persisting master keeps running."""
        if self._sftp is not None:
            self._sftp.close()
            self._sftp = None
        if self._mux_clients is not None and self._mux_lock is not None:
            with self._mux_lock:
                clients = list(self._mux_clients)
            for client in clients:
                self.session_closed(client)
        if self._mux_lock is not None:
            with self._mux_lock:
                disowned, self._mux_disowned = self._mux_disowned, []
            for client in disowned:
                client.close()
        if self._mux_held and self._mux_master is not None:
            self._mux_master.release()
            self._mux_held = False
        self._mux_master = None
        if self._mux_hop is not None and self._mux_hop_owned:
            self._mux_hop.close()
        self._mux_hop = None

    # -- operations ------------------------------------------------------------

    def _remote_runner(self) -> MuxRemote:
        return MuxRemote(context=self, inline_env=self.inline_ssh_env)

    def sftp(self) -> MuxSFTPClient:
        """A paramiko ``SFTPClient`` over an ``sftp`` subsystem session (memoized)."""
        self.open()
        if self._sftp is None:
            # Imported on first use: fab runs that move no files skip it.
            from .sftp import open_sftp

            self._sftp = open_sftp(self)
        return self._sftp

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
        (also on an exception). A busy port raises :class:`ForwardFailed` at once.
        Yields the local port.
        """
        spec = (FWD_LOCAL, local_host, local_port, remote_host, remote_port or local_port)
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
            raise ValueError("forward_remote(0) needs a local_port to forward to")
        spec = (FWD_REMOTE, remote_host, remote_port, local_host, local_port or remote_port)
        with self._forward(spec) as port:
            yield port

    @contextmanager
    def _forward(self, spec: tuple[int, str, int, str, int]) -> Iterator[int]:
        master = self.mux_master
        # The master shares identical forwards and one cancel removes them all:
        # count our users so that only the last block to end cancels it.
        with master.forwards_lock:
            if spec not in master.forwards:
                master.forwards[spec] = [0, self._open_forward(master, spec)]
            entry = master.forwards[spec]
            entry[0] += 1
        try:
            yield entry[1]
        finally:
            with master.forwards_lock:
                entry[0] -= 1
                if entry[0] == 0:
                    del master.forwards[spec]
                    self._close_forward(master, spec)

    def _open_forward(self, master: Master, spec: tuple[int, str, int, str, int]) -> int:
        kind, listen_host, listen_port = spec[:3]
        client = self._control(master)
        try:
            chosen = client.open_forward(*spec)
        except RequestDenied as exc:
            where = "local" if kind == FWD_LOCAL else "remote"
            raise ForwardFailed(
                f"{self.original_host}: could not forward {where} {listen_host}:{listen_port}: "
                f"{exc.reason}"
            ) from None
        finally:
            client.close()
        return chosen or listen_port

    def _close_forward(self, master: Master, spec: tuple[int, str, int, str, int]) -> None:
        try:
            client = master.client()
        except MasterUnavailable:
            return  # the master, and its forwards with it, went away already
        try:
            client.close_forward(*spec)
        except (RequestDenied, OSError):
            pass
        finally:
            client.close()

    def _control(self, master: Master) -> MuxClient:
        """A control connection for a request; a dead or stale master is replaced."""
        try:
            return master.client()
        except MasterUnavailable:
            self._reconnect(master)
            return master.client()

    def _reconnect(self, master: Master) -> None:
        """Bring the route's master back, its gateways' first."""
        hop = self._mux_hop
        if hop is None:
            self.master_pid = self._ensure(master)
            return
        if hop._mux_master is None:
            hop.open()  # a first open brings the hop's own gateways up too
        else:
            hop._reconnect(hop._mux_master)
        self.master_pid = self._ensure_through(master, hop)

    def put(
        self, local: Any, remote: Any = None, preserve_mode: bool = True, progress: Any = None
    ) -> Any:
        """Fabric's ``put``.

        ``progress``: a ``callback(done, total)``, or True for a bar when
        stderr is a terminal. Off by default.
        """
        with self._transfer(progress, local):
            return Transfer(self).put(local, remote, preserve_mode=preserve_mode)

    def get(
        self, remote: Any, local: Any = None, preserve_mode: bool = True, progress: Any = None
    ) -> Any:
        """Fabric's ``get``; ``progress`` as for :meth:`put`."""
        with self._transfer(progress, remote):
            return Transfer(self).get(remote, local, preserve_mode=preserve_mode)

    @contextmanager
    def _transfer(self, progress: Any, path: Any) -> Iterator[None]:
        # An SFTP session opened just for this transfer ends with it: an idle
        # one would hold a session slot, which the file's own 'cat' session
        # then waits for once enough connections to one host each hold one.
        opened_here = self._sftp is None
        sftp: MuxSFTPClient = self.sftp()
        from .sftp import progress_callback

        sftp.default_callback = progress_callback(progress, os.path.basename(str(path)))
        try:
            yield
        finally:
            sftp.default_callback = None
            if opened_here and self._sftp is sftp:
                sftp.close()
                self._sftp = None

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
