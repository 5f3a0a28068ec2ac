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

Other routes may name the same user path (``cm-%h`` for two hosts of one
address, one ``mux.control_path`` for two hosts): a master there is handed
only to the route it connects to (see :mod:`fabric_mux.served`); any other
route gets a master of fabric-mux's own, with a one-line warning. A user's
master that has gone is replaced at their path only where their ControlMaster
says ``auto`` or ``yes``; else in fabric-mux's folder, leaving the path to
their next ``ssh -fN``.

Each hop of the chain is a route of its own, with its master (see
:mod:`fabric_mux.hops`).
"""

from __future__ import annotations

import functools
import logging
import os
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .argv import (
    MAX_CONTROL_PATH,
    SshTarget,
    master_identity,
    parse_resolved_config,
    quote_option_value,
    this_run_only,
)
from .config import MuxSettings, mux_settings
from .connected import Peer, addresses_of
from .controldir import find_control_dir, prepare_control_dir
from .endpoints import endpoint_of, learn, not_connected
from .exceptions import MuxError, ServesAnotherRoute
from .hops import hop_errors, jump_hops, proxy_command, telling_what_the_hop_said
from .login import prompt_answers
from .master import Master
from .process import current
from .resolve import find_ssh, resolve_config
from .served import TITLE, Endpoint, unnamed_part
from .target import Explicit, Secrets, fabric_target, merged_connect_kwargs
from .userlinks import UserMasterLinks, user_master_links

if TYPE_CHECKING:
    from .answers import PromptAnswers

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
        self._endpoint: Endpoint | None = None
        #: Where its host name resolves (for a master's connections: see serving).
        self._where: frozenset[Peer] | None = None

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
            asked = self._asking_control_path()
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

    def _asking_control_path(self) -> SshTarget:
        """The target with ``mux.control_path`` as its ControlPath, for ``ssh -G``."""
        # Not control_path_option: ssh is to expand this path's % tokens.
        option = f"ControlPath={quote_option_value(str(self.settings.control_path))}"
        return self.target._replace(options=(*self.target.options, option))

    def master(self, make_folder: bool = True) -> Master:
        """The :class:`~fabric_mux.master.Master` this route uses now (nothing is
        started; ``make_folder=False`` does not make the control folder either)."""
        mine = self.user_socket()
        if mine is not None:
            master = self._users_master(*mine, make_folder)
            if master is not None:
                return master
        return self._own_master(make_folder)

    def _users_master(self, path: str, mode: str, make_folder: bool) -> Master | None:
        """The master at the user's ``path`` if this route may use it: one is up
        there and serves this route, or none is and ``mode`` (the user's
        ControlMaster) lets one start there. None: a master of our own."""
        master = Master.at_user_path(
            self.ssh, self.target, path, self.resolved(), None, **self._master_settings()
        )
        master.endpoint = self.endpoint()  # its hops resolved: what a start there serves
        pid = master.alive()
        if pid is not None:
            serves = self.serving(master, pid)
            if serves is None:
                return master
            self._conflict(path, serves)
            return None
        if mode not in ("auto", "true", "yes"):
            return None  # the path is the user's own masters': ours lives in our folder
        if not _can_start_at(path):
            log.info("%s: cannot start a master at %s; starting one of ours", self.host, path)
            return None
        master.private_dir = self._folder(make_folder)
        master.start_target = self._target_there(make_folder)
        master.users_proxy = self._users_proxy()
        return master

    def _own_master(self, make_folder: bool) -> Master:
        """A master of fabric-mux's own, in its private folder."""
        control_dir = self._folder(make_folder)
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

    def _folder(self, make_folder: bool) -> Path:
        if make_folder:
            return prepare_control_dir(self.settings.control_dir)
        return find_control_dir(self.settings.control_dir)

    # -- which route a master serves (see fabric_mux.served) ----------------------

    def endpoint(self) -> Endpoint:
        """Where this route's sessions land, and how its server is verified."""
        if self._endpoint is None:
            self._endpoint = endpoint_of(
                self.ssh, self.resolved(), self.target.config_file, self.host, self._kept()
            )
        return self._endpoint

    def serving(self, master: Master, pid: int) -> str | None:
        """None if the master ``pid`` at ``master``'s path (the user's, which other
        routes can name too) serves this route; else what it serves, as the
        warning says it."""
        served = master.served.get(pid)
        if served is None:
            served = master.served.setdefault(
                pid, learn(self.ssh, pid, self._user_path, self._kept(), self.host)
            )
        if served.endpoint is None:
            part = self._unnamed_part(master.control_path) if served.unknown == TITLE else None
            if served.unknown == TITLE and part is None:
                return not_connected(served, self.endpoint(), self._addresses)  # path names it
            why = f"the ControlPath does not name the {part}" if part else served.unknown
            return f"cannot be told apart from another route's ({why})"
        mine = self.endpoint()
        if served.endpoint in (mine, self._start_endpoint()):
            return None if served.endpoint.way else not_connected(served, mine, self._addresses)
        if served.endpoint[:4] == mine[:4]:
            return "checks its server's host key by other rules (StrictHostKeyChecking...)"
        return f"connects to {served.endpoint.describe()}"

    def _addresses(self) -> frozenset[Peer]:
        """Where this route's host name resolves now (see :func:`not_connected`)."""
        if self._where is None:
            mine = self.endpoint()
            self._where = addresses_of(mine.hostname, mine.port) or frozenset()
        return self._where

    def env_passed(self, master: Master) -> tuple[tuple[str, ...] | None, bool]:
        """The SendEnv patterns of the master this route rides (None: every name),
        and whether they are known (not for a master whose command line is gone)."""
        served = master.served.get(master.pid) if master.pid is not None else None
        if served is None:
            return (None, True) if not master.users else ((), False)
        return served.send_env, served.endpoint is not None

    def _start_endpoint(self) -> Endpoint | None:
        """Where a master that fabric-mux starts for this route through a hop of
        its own connects, as its command line says (a ProxyCommand of ours)."""
        if self.hop() is None:
            return None
        there = resolve_config(self.ssh, self._target_there(False), keep_in=self._kept())
        return endpoint_of(self.ssh, there, self.target.config_file, self.host, self._kept())

    def _user_path(self) -> str:
        mine = self.user_socket()
        return mine[0] if mine else ""

    def _unnamed_part(self, path: str) -> str | None:
        target = self._asking_control_path() if self.settings.control_path else self.target

        def control_path_of(changed: SshTarget) -> str:
            text = resolve_config(self.ssh, changed, keep_in=self._kept())
            return parse_resolved_config(text).get("controlpath", "none")

        return unnamed_part(target, self.view(), path, control_path_of)

    def _kept(self) -> Path | None:
        try:
            return find_control_dir(self.settings.control_dir)
        except MuxError:
            return None

    def _conflict(self, path: str, serves: str) -> None:
        """Say once a process that this route does not use the master at ``path``."""
        said = current().said
        if (self.host, path) in said:
            return
        said.add((self.host, path))
        log.warning(
            "fabric-mux: %s: the master at %s %s; %s connects to %s: "
            "using a master of fabric-mux's own for it",
            self.host,
            path,
            serves,
            self.host,
            self.endpoint().describe(),
        )

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
            errors = hop_errors(self._folder(make_folder), hop_path, *self.endpoint()[:3])
            command = proxy_command(self.ssh, hop.host, hop_path, errors)
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
        elif this_run_only(master.identity):
            return "1"  # no later run can tell it is theirs: it lives while held
        return self.settings.persist

    # -- bringing it up ------------------------------------------------------------

    def up(self, master: Master | None = None, *, found: int | None = None) -> Master:
        """Bring the route's master up, its hops first when it has to start;
        returns it. A live master is used as is: no hop is looked at.
        ``found``: the pid that answered on ``master``'s socket just now.

        A master at the user's path that turns out to serve another route (one
        that took the path meanwhile) is left alone: a master of our own serves
        this route instead, with a warning.
        """
        master = master if master is not None else self.master()
        try:
            return self._up(master, found)
        except ServesAnotherRoute as exc:
            self._conflict(exc.path, exc.serves)
            return self._up(self._own_master(True), None)

    def _up(self, master: Master, found: int | None) -> Master:
        check = (lambda pid: self.serving(master, pid)) if master.users else None
        pid = found if found is not None else master.alive()
        if pid is not None:
            serves = check(pid) if check is not None else None
            if serves is not None:
                raise ServesAnotherRoute(master.control_path, serves)
            log.debug("reusing master pid %d for %s at %s", pid, master.host, master.control_path)
            master.pid = pid
        else:
            hop, _ = self._hop_and_command()
            if hop is None:
                master.ensure(self.persist(master), self._answers(master), check)
            else:
                self._start_through(master, hop, hop.up(), check)
        if master.users:
            user_master_links(self.settings).record(master.control_path)
        return master

    def _answers(self, master: Master) -> Callable[[], PromptAnswers | None]:
        return lambda: prompt_answers(self.secrets, master)

    def _start_through(
        self,
        master: Master,
        hop: Route,
        hop_master: Master,
        check: Callable[[int], str | None] | None,
    ) -> None:
        """Start ``master`` through ``hop``; a failure says what the hop said."""
        errors = hop_errors(self._folder(True), hop_master.control_path, *self.endpoint()[:3])
        with telling_what_the_hop_said(errors, f"{self.host} (via gateway {hop.host})"):
            master.ensure(self.persist(master), self._answers(master), check)


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
