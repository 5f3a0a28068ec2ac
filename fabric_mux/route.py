"""How a connection reaches its host: its :class:`Route`.

A route is what ``ssh`` is told (an :class:`~fabric_mux.argv.SshTarget`), how
ssh gets there (directly, through the user's ProxyCommand, or through the
master of a hop, which is a route of its own), and the control socket of the
master at its end: one of fabric-mux's own, or the user's own master that
their ssh_config names. A route brings its chain of masters up, hops first,
answering their prompts with the secrets Fabric was given.

Which master a route uses (OpenSSH's rule, and stricter):

- ``mux.control_path`` set: that socket, as ``ssh -S`` would (the master there
  decides the user, host and settings); one is started there if none answers.
- The connection is the one a bare ``ssh HOST`` would make (the two ``ssh -G``
  views agree) and the user's ssh_config gives it a ControlPath: a live master
  there is ridden (no login, no hop brought up); with none there,
  ``ControlMaster auto`` or ``yes`` starts one there (the user's later
  ``ssh HOST`` rides it), ``no`` leaves the path to the user's own masters and
  fabric-mux starts its own.
- Otherwise (``root@HOST`` where ssh_config says ``User deploy``, another port,
  key or a gateway from Fabric): a master of fabric-mux's own, named after
  OpenSSH's whole view of the connection.

Each hop of the chain is a route of its own, with its master (see
:mod:`fabric_mux.hops`).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .argv import MAX_CONTROL_PATH, SshTarget, master_identity, parse_resolved_config
from .config import MuxSettings, mux_settings
from .controldir import find_control_dir, prepare_control_dir
from .exceptions import MasterStartFailed, MuxError
from .hops import hop_errors_path, jump_hops, proxy_command
from .master import Master
from .resolve import find_ssh, resolve_config
from .target import Explicit, Secrets, fabric_target, merged_connect_kwargs

if TYPE_CHECKING:
    from .askpass import PromptAnswers

__all__ = ["Route", "UserMasterLinks", "as_route", "user_master_links"]

log = logging.getLogger("fabric_mux")


class Route:
    """How one connection reaches its host, and the master at the end of it.

    Make one with :meth:`for_host` (from Fabric's config alone) or a
    connection's ``route()``. Planning spawns nothing but ``ssh -G``; :meth:`up`
    starts what is missing.
    """

    def __init__(
        self,
        target: SshTarget,
        config: Any,
        *,
        settings: MuxSettings | None = None,
        secrets: Secrets | None = None,
        gateway: Any = None,
        config_gateway: Any = None,
    ) -> None:
        self.target = target
        self.config = config
        self.settings = settings if settings is not None else mux_settings(config)
        self.secrets = secrets or Secrets()
        #: The gateway Fabric gives (``gateway=``, else ``config.gateway`` when
        #: ssh_config names none): a Connection, a Route, a ProxyCommand, False.
        self.gateway = gateway
        #: ``config.gateway``, as the connection read it when made.
        self.config_gateway = config_gateway
        self.ssh = find_ssh(self.settings.ssh_path)
        # Fabric's connect timeout (fab -t) over ours; ssh_config's over both.
        self.connect_timeout = config.timeouts.connect or self.settings.connect_timeout
        self._resolved: str | None = None
        self._hop: tuple[Route | None, str | None] | None = None

    @classmethod
    def for_host(
        cls,
        host: str,
        config: Any,
        *,
        user: str | None = None,
        port: int | None = None,
        gateway: Any = None,
        forward_agent: bool | None = None,
        connect_timeout: int | None = None,
        connect_kwargs: Mapping[str, Any] | None = None,
    ) -> Route:
        """The route of a connection to ``host`` made with these arguments and ``config``,
        as a ``MuxConnection`` would make it, without making one."""
        settings = mux_settings(config)
        kwargs = merged_connect_kwargs(config.connect_kwargs, connect_kwargs)
        explicit = Explicit(user, port, forward_agent, gateway, connect_timeout)

        @functools.lru_cache(maxsize=1)
        def lookup() -> Mapping[str, Any]:
            found: Mapping[str, Any] = config.base_ssh_config.lookup(host)
            return found

        target = fabric_target(host, config, explicit, kwargs, lookup, settings)
        return cls(
            target,
            config,
            settings=settings,
            secrets=Secrets.of(kwargs),
            gateway=gateway,
            config_gateway=config.gateway,
        )

    @property
    def host(self) -> str:
        return self.target.destination

    # -- what OpenSSH makes of it --------------------------------------------------

    def resolved(self) -> str:
        """``ssh -G``'s view of the target, before any hop of ours."""
        if self._resolved is None:
            try:  # answers kept between runs live in the control folder
                kept: Path | None = find_control_dir(self.settings.control_dir)
            except MuxError:
                kept = None  # a master at the user's own path needs no folder of ours
            self._resolved = resolve_config(self.ssh, self.target, keep_in=kept)
        return self._resolved

    def view(self) -> Mapping[str, str]:
        """:meth:`resolved` as keywords (lower case) and their first values
        (parsed once a text: :func:`~fabric_mux.argv.parse_resolved_config`)."""
        return parse_resolved_config(self.resolved())

    def _fabric_gateway(self) -> Any:
        """The gateway Fabric decides, with Fabric's precedence: ``gateway=`` >
        ssh_config ProxyJump > ProxyCommand > ``config.gateway``; None when
        ssh_config decides (or there is none)."""
        if self.gateway is not None:
            return self.gateway
        view = self.view()
        if view.get("proxyjump", "none") != "none" or view.get("proxycommand", "none") != "none":
            return None
        return self.config_gateway or None

    def hop(self) -> Route | None:
        """The route of the hop before the target, if it goes through one of ours."""
        return self._hop_and_command()[0]

    def proxy_command(self) -> str | None:
        """A ProxyCommand that Fabric gives as a string (ssh_config's own is ssh's)."""
        return self._hop_and_command()[1]

    def _hop_and_command(self) -> tuple[Route | None, str | None]:
        if self._hop is None:
            self._hop = self._plan_hop()
        return self._hop

    def _plan_hop(self) -> tuple[Route | None, str | None]:
        gateway = self._fabric_gateway()
        if gateway is None:
            hops = jump_hops(self.view().get("proxyjump", "none"))
            hop: Route | None = None
            for jump in hops:
                if jump.host == self.host:
                    return None, None  # a wildcard ProxyJump that names this very host
                # The first hop follows its own ssh_config; later ones go through the previous.
                hop = Route.for_host(
                    jump.host, self.config, user=jump.user, port=jump.port, gateway=hop
                )
            return hop, None
        if gateway is False:
            return None, None
        if isinstance(gateway, str):
            return None, gateway
        return as_route(gateway, self.config), None

    # -- which master ------------------------------------------------------------

    def user_socket(self) -> tuple[str, str] | None:
        """``(path, ControlMaster)`` of the user's own master this route may use
        (see the module's rule), or None."""
        if self.settings.control_path:
            asked = self.target._replace(
                options=(*self.target.options, f"ControlPath={self.settings.control_path}")
            )
            path = parse_resolved_config(resolve_config(self.ssh, asked)).get("controlpath")
            return (path, "auto") if path and path != "none" else None
        if not self.settings.user_masters or self._fabric_gateway() is not None:
            return None
        view = self.view()
        path = view.get("controlpath", "none")
        if path == "none":
            return None
        bare = SshTarget(self.host, config_file=self.target.config_file)
        if self.target._replace(connect_timeout=None) == bare:
            bare_text = self.resolved()
        else:
            bare_text = resolve_config(self.ssh, bare)
            if master_identity(bare_text, self.host, os.environ) != master_identity(
                self.resolved(), self.host, os.environ
            ):
                log.debug("%s: not the connection a bare ssh makes: not riding %s", self.host, path)
                return None
        return path, parse_resolved_config(bare_text).get("controlmaster", "false")

    def master(self, make_folder: bool = True) -> Master:
        """The :class:`~fabric_mux.master.Master` this route uses now (nothing is
        started; ``make_folder=False`` does not make the control folder either)."""
        mine = self.user_socket()
        if mine is not None:
            path, mode = mine
            master = Master.at_user_path(self.ssh, self.target, path, **self._master_settings())
            if master.alive() is not None:
                return master
            if mode in ("auto", "true", "yes"):
                if _can_start_at(path):
                    master.start_target = self._target_there(make_folder)
                    master.users_proxy = self._users_proxy()
                    return master
                log.info("%s: cannot start a master at %s; starting one of ours", self.host, path)
        if make_folder:
            control_dir = prepare_control_dir(self.settings.control_dir)
        else:
            control_dir = find_control_dir(self.settings.control_dir)
        there = self._target_there(make_folder)
        master = Master.for_target(
            self.ssh,
            there,
            control_dir,
            self.resolved() if there == self.target else None,
            **self._master_settings(),
        )
        master.users_proxy = self._users_proxy()
        return master

    def _users_proxy(self) -> bool:
        """Whether ssh gets there through a ProxyCommand of the user's (a Fabric
        gateway string, or ssh_config's), not through a hop's master of ours."""
        if self.proxy_command() is not None:
            return True
        view = self.view()
        return self.hop() is None and view.get("proxycommand", "none") != "none"

    def _master_settings(self) -> dict[str, Any]:
        settings = self.settings
        return {
            "server_alive": settings.server_alive,
            "connect_timeout": self.connect_timeout,
            "max_sessions": settings.max_sessions,
            "reply_timeout": settings.reply_timeout,
            "connect_retries": settings.connect_retries,
        }

    def _target_there(self, make_folder: bool) -> SshTarget:
        """The target with the ProxyCommand that goes through the hop's master."""
        hop, command = self._hop_and_command()
        if hop is not None:
            hop_path = hop.master(make_folder).control_path
            command = proxy_command(self.ssh, hop.host, hop_path)
        if command is None:
            return self.target
        return self.target._replace(options=(f"ProxyCommand={command}", *self.target.options))

    def persist(self, master: Master) -> str:
        """How long a master this route starts outlives its last session: the
        user's ControlPersist at their own path, else ``mux.persist``."""
        if master.users:
            theirs = self.view().get("controlpersist", "no")
            if theirs not in ("no", "false", "0"):
                return "yes" if theirs == "true" else theirs
        return self.settings.persist

    # -- bringing it up ------------------------------------------------------------

    def up(self, master: Master | None = None, *, found: int | None = None) -> Master:
        """Bring the route's master up, its hops first when it has to start;
        returns it. A live master is used as is: no hop is looked at.
        ``found``: the pid that answered on ``master``'s socket just now."""
        master = master if master is not None else self.master()
        pid = found if found is not None else master.alive()
        if master.users:
            user_master_links(self.settings).record(master.control_path)
        if pid is not None:
            log.debug("reusing master pid %d for %s at %s", pid, master.host, master.control_path)
            master.pid = pid
            return master
        hop, _ = self._hop_and_command()
        if hop is None:
            master.ensure(self.persist(master), answer=lambda: self.prompt_answers(master))
            return master
        hop_master = hop.up()
        self._start_through(master, hop, hop_master)
        return master

    def _start_through(self, master: Master, hop: Route, hop_master: Master) -> None:
        """Start ``master`` through ``hop``; a failure says what the hop said."""
        errors = hop_errors_path(hop_master.control_path)
        try:
            offset = os.path.getsize(errors)
        except FileNotFoundError:
            offset = 0
        try:
            master.ensure(self.persist(master), answer=lambda: self.prompt_answers(master))
        except MasterStartFailed as exc:
            # The hop's own master is up, so it let us in: what failed is the
            # way on from it to this host, and the forward's error says why.
            try:
                with open(errors, "rb") as log_file:
                    log_file.seek(offset)
                    said = log_file.read().decode("utf-8", "replace")
            except FileNotFoundError:
                said = ""
            raise type(exc)(
                f"{self.host} (via gateway {hop.host})",
                exc.argv,
                exc.exit_code,
                said + exc.stderr,
                exc.note,
            ) from None

    def prompt_answers(self, master: Master) -> PromptAnswers | None:
        """Who answers the master's prompts: Fabric's secrets, then the user.

        The password (``connect_kwargs["password"]``, ``fab
        --prompt-for-login-password``) answers only this route's own password
        prompts, the key passphrase only this route's own identity files; each
        once, as a second prompt means it was wrong and repeating it could
        lock the account. Anything else (a one-time code, a new host key's
        question) is asked on the user's terminal, when there is one. None:
        nothing can answer (the master then runs in batch mode).
        """
        # Imported here: called only when a master starts.
        from . import askpass

        password, passphrase = self.secrets
        terminal = askpass.ask_on_terminal if askpass.terminal_available() else None
        if not (password or passphrase or terminal):
            return None
        user, host = master.prompt_host()
        return askpass.PromptAnswers(
            user=user,
            host=host,
            identity_files=master.identity_files(),
            password=password,
            passphrase=passphrase,
            terminal=terminal,
        )


def as_route(gateway: Any, config: Any) -> Route:
    """A gateway given to Fabric (a Connection of either kind, or a Route) as a Route."""
    if isinstance(gateway, Route):
        return gateway
    own = getattr(gateway, "route", None)
    if callable(own):  # a MuxConnection knows its own route
        route: Route = own()
        return route
    from fabric import Connection

    if not isinstance(gateway, Connection):
        raise TypeError(
            f"a gateway is a Connection, a ProxyCommand string or False, not {gateway!r}"
        )
    return Route.for_host(
        gateway.original_host,
        gateway.config or config,
        user=gateway.user,
        port=gateway.port,
        gateway=gateway.gateway,
        forward_agent=gateway.forward_agent,
        connect_timeout=gateway.connect_timeout,
        connect_kwargs=gateway.connect_kwargs,
    )


def _can_start_at(path: str) -> bool:
    """Whether ssh can make a master's socket at the user's ``path``: its folder is
    there, and the path leaves room for the suffix ssh binds with first."""
    if len(path.encode()) > MAX_CONTROL_PATH:
        return False
    try:
        folder = os.stat(os.path.dirname(path) or ".")
    except OSError:
        return False
    return stat.S_ISDIR(folder.st_mode) and os.access(os.path.dirname(path) or ".", os.W_OK)


class UserMasterLinks:
    """The user's own sockets that fabric-mux has used, linked from the control
    folder (``user-<hash>``), so that ``fabric-mux list`` can show them and
    ``stop --all`` can leave them alone."""

    PREFIX = "user-"

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def record(self, path: str) -> None:
        try:
            folder = prepare_control_dir(str(self.folder))
        except MuxError:
            return  # a record is a courtesy: the route works without it
        name = self.PREFIX + hashlib.sha256(path.encode()).hexdigest()[:16]
        link = folder / name
        try:
            if os.readlink(link) == path:
                return
            os.unlink(link)
        except OSError:
            pass
        try:
            os.symlink(path, link)
        except OSError as exc:
            log.debug("could not record the user's master %s: %s", path, exc)

    def paths(self) -> dict[Path, str]:
        """Each link and the user's socket path it names."""
        found: dict[Path, str] = {}
        if not self.folder.is_dir():
            return found
        for link in sorted(self.folder.glob(self.PREFIX + "*")):
            try:
                found[link] = os.readlink(link)
            except OSError:
                continue
        return found


def user_master_links(settings: MuxSettings) -> UserMasterLinks:
    return UserMasterLinks(find_control_dir(settings.control_dir))
