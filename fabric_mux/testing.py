"""A throwaway OpenSSH server on 127.0.0.1 for tests.

:func:`ssh_server` starts a real ``sshd`` in a folder of its own, with fresh host
and client keys, and writes an ``ssh_config`` that lets the system ``ssh`` (and
Fabric) log in without reading anything from ``~/.ssh``::

    with ssh_server(Path(tempfile.mkdtemp(dir="/tmp"))) as server:
        subprocess.run(["ssh", "-F", str(server.ssh_config), server.alias, "true"])
        assert server.logins() == 1

Several servers in one ssh_config (:func:`ssh_fleet`), a slow link
(:class:`LatencyRelay`) and the pytest fixtures built on them
(:mod:`fabric_mux.pytest_plugin`) come with it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import fabric

from .relay import LatencyRelay

__all__ = [
    "OPENSSH_VARIABLE",
    "Fleet",
    "LatencyRelay",
    "SshServer",
    "SshdNotFound",
    "openssh_prefix",
    "ssh_fleet",
    "ssh_server",
    "unwinding_on_signals",
    "use_openssh_from_environment",
]

HOST = "127.0.0.1"

#: How long sshd may take to start listening, and its processes to die.
_TIMEOUT = 10.0
_BIND_ATTEMPTS = 5
_SEARCH_DIRS = ("/usr/sbin", "/usr/local/sbin")

# "Accepted key ... found at ..." also starts with "Accepted" but comes twice per login.
_LOGIN_RE = re.compile(r"^Accepted (?!key )\S+ for (\S+) from ", re.MULTILINE)

# The harness depends on these: the caller may not replace them.
_FIXED_KEYWORDS = frozenset({"port", "listenaddress", "pidfile"})

# sshd before 8.7 reads ChallengeResponseAuthentication, the old name of
# KbdInteractiveAuthentication (and turns keyboard-interactive on by it unless
# told otherwise); later ones take it as an alias. Both are written, as one.
_KEYBOARD_NAMES = ("KbdInteractiveAuthentication", "ChallengeResponseAuthentication")

#: The environment variable naming the OpenSSH to test with: a prefix holding
#: ``bin/ssh``, ``bin/ssh-keygen`` and ``sbin/sshd`` (``/opt/openssh-8.0``, say).
#: Unset or empty: the system's.
OPENSSH_VARIABLE = "FMUX_OPENSSH"
_PREFIX_PROGRAMS = ("bin/ssh", "bin/ssh-keygen", "sbin/sshd")


class SshdNotFound(RuntimeError):
    """No ``sshd`` (or ``ssh-keygen``) binary was found."""


def openssh_prefix() -> Path | None:
    """The OpenSSH that :data:`OPENSSH_VARIABLE` names; None when it is unset.

    :raises SshdNotFound: it names a folder without ``bin/ssh``,
        ``bin/ssh-keygen`` and ``sbin/sshd``.
    """
    value = os.environ.get(OPENSSH_VARIABLE)
    if not value:
        return None
    prefix = Path(value).absolute()
    missing = [name for name in _PREFIX_PROGRAMS if not os.access(prefix / name, os.X_OK)]
    if missing:
        raise SshdNotFound(f"{OPENSSH_VARIABLE}={value} holds no {', '.join(missing)}")
    return prefix


def use_openssh_from_environment() -> Path | None:
    """Put the ``bin`` of :func:`openssh_prefix` first on ``PATH`` (clients found
    by name: ``ssh``, ``ssh-keygen``, ``ssh-add``, and ``mux.ssh_path``'s default);
    servers started here use its ``sbin/sshd``. Returns the prefix, if any."""
    prefix = openssh_prefix()
    if prefix is None:
        return None
    folder = str(prefix / "bin")
    path = os.environ.get("PATH", os.defpath).split(os.pathsep)
    if path[:1] != [folder]:
        os.environ["PATH"] = os.pathsep.join([folder, *(p for p in path if p != folder)])
    return prefix


class SshServer:
    """A running throwaway ``sshd``; made by :func:`ssh_server`.

    :ivar host: the address it listens on, ``127.0.0.1``.
    :ivar port: the port it listens on.
    :ivar user: the account that logs in.
    :ivar alias: the first host alias defined in ``ssh_config``.
    :ivar aliases: every host alias defined in ``ssh_config``.
    :ivar directory: the server's folder.
    :ivar ssh_config: a client configuration for ``ssh -F``.
    :ivar known_hosts: holds this server's host key for ``[127.0.0.1]:PORT``.
    :ivar client_key: private key whose public half is in ``authorized_keys``.
    :ivar log: sshd's log, at ``LogLevel VERBOSE``.
    """

    host: str
    port: int
    user: str
    alias: str
    aliases: tuple[str, ...]
    directory: Path
    ssh_config: Path
    known_hosts: Path
    client_key: Path
    log: Path

    def __init__(
        self,
        *,
        process: subprocess.Popen[bytes],
        port: int,
        user: str,
        aliases: tuple[str, ...],
        directory: Path,
        ssh_config: Path,
        known_hosts: Path,
        client_key: Path,
        log: Path,
    ) -> None:
        self._process = process
        self._stopped = False
        self._relays: list[LatencyRelay] = []
        #: The relay every alias goes through, when made with ``latency_ms``.
        self.relay: LatencyRelay | None = None
        self.host = HOST
        self.port = port
        self.user = user
        self.alias = aliases[0]
        self.aliases = aliases
        self.directory = directory
        self.ssh_config = ssh_config
        self.known_hosts = known_hosts
        self.client_key = client_key
        self.log = log

    def __repr__(self) -> str:
        return f"<SshServer {self.user}@{self.host}:{self.port} pid={self.pid}>"

    @property
    def pid(self) -> int:
        """The listener's process id."""
        return self._process.pid

    def logins(self, user: str | None = None) -> int:
        """Count the successful logins so far, by any method.

        :param user: count only this account's logins; ``None``: everyone's.
        """
        text = self.log.read_text(errors="replace")
        return sum(1 for m in _LOGIN_RE.finditer(text) if user is None or m.group(1) == user)

    def delayed(self, latency_ms: float, alias: str | None = None) -> str:
        """A new alias of this server, reached through a :class:`LatencyRelay`
        adding ``latency_ms`` each way (a round trip of twice that); returns it.

        The relay runs until the server stops. Its host key is this server's.
        """
        relay = LatencyRelay(self.port, latency_ms / 1000).start()
        self._relays.append(relay)
        name = alias or f"{self.alias}-{latency_ms:g}ms"
        with self.ssh_config.open("a") as config:
            config.write(_relayed_host(name, relay.port, self.port, self.user))
        self.aliases = (*self.aliases, name)
        return name

    def routes(self, count: int, prefix: str = "route") -> list[str]:
        """``count`` new aliases of this server that are distinct routes: each has a
        HostKeyAlias of its own (known_hosts knows them all), so each gets a master
        and a login of its own, as distinct hosts would. Cheap many-host tests."""
        key = self.known_hosts.read_text().splitlines()[0].split(None, 1)[1]  # the server's
        names = [f"{prefix}{n}" for n in range(1, count + 1)]
        port = self.relay.port if self.relay else self.port
        with self.known_hosts.open("a") as known, self.ssh_config.open("a") as config:
            for name in names:
                known.write(f"{name} {key}\n")
                config.write(
                    f"Host {name}\n    HostName {HOST}\n    Port {port}\n"
                    f"    HostKeyAlias {name}\n    User {self.user}\n"
                )
        self.aliases = (*self.aliases, *names)
        return names

    def fabric_config(self, overrides: dict[str, Any] | None = None) -> fabric.Config:
        """A :class:`fabric.Config` that reads ``ssh_config`` and nothing else.

        :param overrides: passed on as the config's ``overrides`` level.
        """
        return fabric.Config(runtime_ssh_path=str(self.ssh_config), overrides=overrides or {})

    def processes(self) -> int:
        """How many processes the server runs for its connections now."""
        return sum(1 for pid in _descendants(self._process.pid) if _alive(pid))

    def freeze(self) -> set[int]:
        """Stop (SIGSTOP) the listener and every process it spawned: a server
        whose TCP connections stay up but that answers nothing. Returns the pids.
        """
        targets = {self._process.pid}
        _signal(self._process.pid, signal.SIGSTOP)
        # Freeze as we go, so nothing in the tree forks a child we would not see.
        while True:
            found = _descendants(self._process.pid) - targets
            if not found:
                return targets
            for pid in found:
                _signal(pid, signal.SIGSTOP)
            targets |= found

    def thaw(self) -> None:
        """Undo :meth:`freeze`."""
        for pid in {self._process.pid} | _descendants(self._process.pid):
            _signal(pid, signal.SIGCONT)

    def stop(self) -> None:
        """Kill the listener and every process it spawned, and wait for them.

        Calling it again does nothing.
        """
        if self._stopped:
            return
        self._stopped = True
        for relay in self._relays:
            relay.close()
        process = self._process
        if process.poll() is not None:
            # Its connections' processes are orphans by now: nothing links them to us.
            return
        # Each connection's sshd calls setsid() and outlives the listener; their
        # parent pid is all that ties them to this server, and it is lost when the
        # listener dies.
        targets = self.freeze()
        for pid in targets:
            _signal(pid, signal.SIGKILL)
        process.wait()
        _wait_gone(targets - {process.pid})


@contextmanager
def ssh_server(
    directory: Path,
    *,
    user: str | None = None,
    aliases: Sequence[str] = ("fmux-test",),
    sshd_options: Sequence[str] = (),
    sshd_path: str | None = None,
    latency_ms: float | None = None,
) -> Iterator[SshServer]:
    """Run a throwaway ``sshd`` on 127.0.0.1 until the block ends.

    Keep ``directory`` short (UNIX socket paths made beside it are limited to
    about 90 bytes). When ``user`` is another account, every folder above
    ``directory`` must be searchable by it, as sshd reads ``authorized_keys``
    as that user: ``/tmp`` is.

    :param directory: the server's folder; made if missing.
    :param user: the account that logs in; the current one by default. Only
        root can let another account log in.
    :param aliases: host names that ``ssh_config`` maps to this server.
    :param sshd_options: extra ``sshd_config`` lines, e.g. ``"MaxSessions 2"``.
        Each replaces the default lines of its keyword (``Subsystem``: of its
        name); a ``Match`` block may come last.
    :param sshd_path: the ``sshd`` binary; by default the one of
        :data:`OPENSSH_VARIABLE` when it is set, else searched in ``PATH``,
        ``/usr/sbin`` and ``/usr/local/sbin``.
    :param latency_ms: reach the server through a :class:`LatencyRelay` that
        adds this much each way (every alias does; ``server.relay`` counts
        the round trips).
    :raises SshdNotFound: there is no ``sshd`` or ``ssh-keygen``.
    :raises RuntimeError: sshd rejected its configuration or did not start.
    :raises ValueError: bad ``aliases``, ``sshd_options`` or ``user``, or a
        ``directory`` that ``user`` cannot reach.
    """
    sshd = _find_sshd(sshd_path)
    prefix = openssh_prefix()
    # Keys made by the OpenSSH under test, which older ones can read.
    keygen = str(prefix / "bin/ssh-keygen") if prefix else shutil.which("ssh-keygen")
    if keygen is None:
        raise SshdNotFound("ssh-keygen not found in PATH")
    aliases = tuple(aliases)
    if not aliases or any(not a or any(c.isspace() for c in a) for a in aliases):
        raise ValueError(f"aliases must be non-empty words: {aliases!r}")
    options = list(sshd_options)
    overridden = _overridden_keywords(options)
    if overridden & _FIXED_KEYWORDS:
        raise ValueError(f"sshd_options may not set {sorted(overridden & _FIXED_KEYWORDS)}")

    current = pwd.getpwuid(os.geteuid()).pw_name
    try:
        account = pwd.getpwnam(user or current)
    except KeyError:
        raise ValueError(f"no such account: {user!r}") from None
    as_root = os.geteuid() == 0
    if account.pw_name != current and not as_root:
        raise ValueError(f"only root can run a server that {account.pw_name!r} logs in to")

    directory = directory.absolute()
    directory.mkdir(parents=True, exist_ok=True)
    host_key_dir = directory / "hostkeys"
    host_key_dir.mkdir(mode=0o700, exist_ok=True)
    host_key_dir.chmod(0o700)
    host_key = host_key_dir / "ssh_host_ed25519_key"
    client_key = directory / "client_ed25519"
    _keygen(keygen, host_key, "fmux-test-host")
    _keygen(keygen, client_key, "fmux-test-client")
    authorized_keys = directory / "authorized_keys"
    authorized_keys.write_bytes(client_key.with_name(client_key.name + ".pub").read_bytes())
    if account.pw_name != current:
        # sshd opens authorized_keys with the user's uid.
        directory.chmod(0o755)
        authorized_keys.chmod(0o644)
        _check_reachable(authorized_keys, account)

    if as_root:
        # sshd's privilege separation needs it; the openssh-server service makes it.
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)

    config = directory / "sshd_config"
    log = directory / "sshd.log"
    ssh_config = directory / "ssh_config"
    known_hosts = directory / "known_hosts"
    host_public = host_key.with_name(host_key.name + ".pub").read_text().split()[:2]

    process: subprocess.Popen[bytes] | None = None
    port = 0
    for attempt in range(_BIND_ATTEMPTS):
        port = _free_port()
        config.write_text(
            _sshd_config(
                port=port,
                host_key=host_key,
                pid_file=directory / "sshd.pid",
                authorized_keys=authorized_keys,
                options=options,
                overridden=overridden,
            )
        )
        if attempt == 0:
            _validate(sshd, config)
        process = _start(sshd, config, log)
        if process is not None:
            break
    if process is None:
        raise RuntimeError(f"sshd found no free port in {_BIND_ATTEMPTS} attempts:\n{_read(log)}")

    server = SshServer(
        process=process,
        port=port,
        user=account.pw_name,
        aliases=aliases,
        directory=directory,
        ssh_config=ssh_config,
        known_hosts=known_hosts,
        client_key=client_key,
        log=log,
    )
    try:
        reach = port
        if latency_ms is not None:
            server.relay = LatencyRelay(port, latency_ms / 1000).start()
            server._relays.append(server.relay)
            reach = server.relay.port
        ssh_config.write_text(
            _ssh_config(
                aliases=aliases,
                port=reach,
                user=account.pw_name,
                client_key=client_key,
                known_hosts=known_hosts,
                key_port=port,
            )
        )
        known_hosts.write_text(f"[{HOST}]:{port} {' '.join(host_public)}\n")
        yield server
    finally:
        server.stop()


class Fleet(NamedTuple):
    """Several servers in one ssh_config, maybe behind a bastion; see :func:`ssh_fleet`."""

    #: The hosts' aliases: ``host1``, ``host2``...
    hosts: tuple[str, ...]
    #: Their servers, in the same order.
    servers: tuple[SshServer, ...]
    #: The bastion's alias (``bastion``) when the hosts are behind one.
    bastion: str | None
    #: The bastion's server, if any.
    bastion_server: SshServer | None
    #: The ssh_config naming them all, as a ``~/.ssh/config`` would.
    ssh_config: Path

    def fabric_config(self, overrides: dict[str, Any] | None = None) -> fabric.Config:
        """A :class:`fabric.Config` that reads ``ssh_config`` and nothing else."""
        return fabric.Config(runtime_ssh_path=str(self.ssh_config), overrides=overrides or {})

    def logins(self) -> dict[str, int]:
        """Logins so far, by alias (the bastion's too)."""
        counts = {alias: server.logins() for alias, server in zip(self.hosts, self.servers)}
        if self.bastion and self.bastion_server:
            counts[self.bastion] = self.bastion_server.logins()
        return counts


@contextmanager
def ssh_fleet(
    directory: Path,
    count: int,
    *,
    bastion: bool = False,
    user: str | None = None,
    latency_ms: float | None = None,
) -> Iterator[Fleet]:
    """``count`` throwaway servers (``host1``...), optionally behind a bastion, in one
    ssh_config, as a sysadmin's ``~/.ssh/config`` names a fleet.

    With ``bastion``, every host is reached with ``ProxyJump bastion``, and only
    the bastion is reachable directly (the hosts still listen on 127.0.0.1,
    but the config goes through the bastion). ``latency_ms`` puts each server
    behind a :class:`LatencyRelay` of its own.
    """
    directory = directory.absolute()
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)  # the servers' accounts reach their authorized_keys through it
    with contextlib.ExitStack() as stack:

        def start(name: str) -> SshServer:
            folder = directory / name
            return stack.enter_context(
                ssh_server(folder, user=user, aliases=(name,), latency_ms=latency_ms)
            )

        servers = tuple(start(f"host{n}") for n in range(1, count + 1))
        jump = start("bastion") if bastion else None
        everyone = (*servers, *([jump] if jump else []))
        known = directory / "known_hosts"
        known.write_text("".join(server.known_hosts.read_text() for server in everyone))
        blocks = []
        for server in everyone:
            block = server.ssh_config.read_text().split("Host *")[0]
            if jump is not None and server is not jump:
                block += "    ProxyJump bastion\n"
            blocks.append(block)
        common = (
            "Host *\n"
            + "".join(f"    IdentityFile {_path(s.client_key)}\n" for s in everyone)
            + "    IdentitiesOnly yes\n"
            f"    UserKnownHostsFile {_path(known)}\n"
            "    GlobalKnownHostsFile /dev/null\n"
            "    StrictHostKeyChecking yes\n"
            "    BatchMode yes\n"
        )
        ssh_config = directory / "ssh_config"
        ssh_config.write_text("".join(blocks) + common)
        yield Fleet(
            hosts=tuple(s.alias for s in servers),
            servers=servers,
            bastion=jump.alias if jump else None,
            bastion_server=jump,
            ssh_config=ssh_config,
        )


@contextmanager
def unwinding_on_signals() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into SystemExit inside, so clean-ups still run
    (a run stopped by ``timeout`` or a closed terminal would otherwise leave its
    account lent, or its servers and folders behind). Only the main thread can
    take signals: elsewhere it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def leave(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, leave) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _find_sshd(sshd_path: str | None) -> str:
    prefix = openssh_prefix()
    if sshd_path is None and prefix is not None:
        return str(prefix / "sbin/sshd")
    if sshd_path is not None:
        found = shutil.which(sshd_path)
        if found is None:
            raise SshdNotFound(f"sshd not found: {sshd_path}")
    else:
        search = os.pathsep.join([os.environ.get("PATH", os.defpath), *_SEARCH_DIRS])
        found = shutil.which("sshd", path=search)
        if found is None:
            raise SshdNotFound(f"sshd not found in PATH, {', '.join(_SEARCH_DIRS)}")
    # sshd re-executes itself for each connection, which needs an absolute path.
    return os.path.abspath(found)


def _keygen(keygen: str, key: Path, comment: str) -> None:
    # ssh-keygen asks before overwriting, and there is nobody to answer.
    key.unlink(missing_ok=True)
    key.with_name(key.name + ".pub").unlink(missing_ok=True)
    argv = [keygen, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)]
    result = subprocess.run(
        argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {result.stderr.strip()}")
    key.chmod(0o600)


def _check_reachable(path: Path, account: pwd.struct_passwd) -> None:
    """Fail early where sshd would only say "Permission denied (publickey)"."""
    groups = set(os.getgrouplist(account.pw_name, account.pw_gid))
    for folder in path.resolve().parents:
        st = folder.stat()
        if st.st_uid == account.pw_uid:
            bit = 0o100
        elif st.st_gid in groups:
            bit = 0o010
        else:
            bit = 0o001
        if not st.st_mode & bit:
            raise ValueError(
                f"{account.pw_name!r} cannot reach {path}, which sshd reads as that"
                f" account: {folder} is not searchable by it"
            )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _quote(value: str) -> str:
    """Quote a value for ssh_config/sshd_config, whose lines are split like argv."""
    if value and not any(c.isspace() or c in "\"'\\#" for c in value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _path(path: Path) -> str:
    """Quote a path for an option that expands %-tokens."""
    return _quote(str(path).replace("%", "%%"))


def _keyword(line: str) -> str:
    # Lines read "Keyword value" or "Keyword=value"; Subsystem is keyed by its name.
    words = line.strip().replace("=", " ", 1).split()
    if not words:
        return ""
    keyword = words[0].lower()
    if keyword == "subsystem" and len(words) > 1:
        return f"subsystem {words[1]}"
    if keyword == _KEYBOARD_NAMES[1].lower():
        return _KEYBOARD_NAMES[0].lower()
    return keyword


def _both_keyboard_names(options: Sequence[str]) -> list[str]:
    """``options`` where a keyboard-interactive line (either name, before any
    ``Match``) comes with its other name too: every sshd then reads the value."""
    out: list[str] = []
    for index, line in enumerate(options):
        out.append(line)
        words = line.strip().replace("=", " ", 1).split()
        if words and words[0].lower() == "match":
            return out + list(options[index + 1 :])
        names = [name.lower() for name in _KEYBOARD_NAMES]
        if words and words[0].lower() in names and len(words) > 1:
            other = _KEYBOARD_NAMES[1 - names.index(words[0].lower())]
            if not any(o.strip().lower().startswith(other.lower()) for o in options):
                out.append(f"{other} {words[1]}")
    return out


def _overridden_keywords(options: Sequence[str]) -> set[str]:
    keywords: set[str] = set()
    for line in options:
        keyword = _keyword(line)
        if keyword == "match":
            # What follows is conditional, not a replacement of the defaults.
            break
        if keyword and not keyword.startswith("#"):
            keywords.add(keyword)
    return keywords


def _sshd_config(
    *,
    port: int,
    host_key: Path,
    pid_file: Path,
    authorized_keys: Path,
    options: Sequence[str],
    overridden: set[str],
) -> str:
    defaults = [
        f"AuthorizedKeysFile {_path(authorized_keys)}",
        "StrictModes no",
        "UsePAM no",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        *(f"{name} no" for name in _KEYBOARD_NAMES),
        "LogLevel VERBOSE",
        "MaxStartups 100",
        "AllowTcpForwarding yes",
        "PermitRootLogin yes",
        "AcceptEnv FMUX_*",
        # Login shells would otherwise print /etc/motd and the last login.
        "PrintMotd no",
        "PrintLastLog no",
        "Subsystem sftp internal-sftp",
    ]
    # sshd keeps the first value of most keywords and rejects a second Subsystem
    # of one name, so a caller's option replaces the default rather than follow it.
    lines = [
        "# Written by fabric_mux.testing.",
        f"Port {port}",
        f"ListenAddress {HOST}",
        f"HostKey {_quote(str(host_key))}",
        f"PidFile {_quote(str(pid_file))}",
        *(line for line in defaults if _keyword(line) not in overridden),
        *_both_keyboard_names(options),
    ]
    return "\n".join(lines) + "\n"


def _relayed_host(alias: str, relay_port: int, port: int, user: str) -> str:
    """A Host block that reaches the server through a relay, its host key known as usual."""
    return (
        f"Host {alias}\n"
        f"    HostName {HOST}\n"
        f"    Port {relay_port}\n"
        f"    HostKeyAlias [{HOST}]:{port}\n"
        f"    User {user}\n"
    )


def _ssh_config(
    *,
    aliases: Sequence[str],
    port: int,
    user: str,
    client_key: Path,
    known_hosts: Path,
    key_port: int,
) -> str:
    # Through a relay, the port differs from the one known_hosts names the key by.
    key_alias = f"    HostKeyAlias [{HOST}]:{key_port}\n" if key_port != port else ""
    return (
        f"Host {' '.join(aliases)}\n"
        f"    HostName {HOST}\n"
        f"    Port {port}\n"
        f"{key_alias}"
        f"    User {user}\n"
        "Host *\n"
        f"    IdentityFile {_path(client_key)}\n"
        "    IdentitiesOnly yes\n"
        f"    UserKnownHostsFile {_path(known_hosts)}\n"
        "    GlobalKnownHostsFile /dev/null\n"
        "    StrictHostKeyChecking yes\n"
        "    BatchMode yes\n"
    )


def _validate(sshd: str, config: Path) -> None:
    result = subprocess.run(
        [sshd, "-t", "-f", str(config)],
        check=False,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"sshd rejected {config}:\n{result.stderr.strip()}")


def _start(sshd: str, config: Path, log: Path) -> subprocess.Popen[bytes] | None:
    """Start sshd; ``None`` if its port was taken meanwhile."""
    log.write_bytes(b"")
    with log.open("ab") as log_file:
        # Its own session: a Ctrl-C meant for pytest must not kill the listener
        # before stop() has found the connections' processes through it.
        process = subprocess.Popen(
            [sshd, "-D", "-f", str(config), "-E", str(log)],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            start_new_session=True,
        )
    deadline = time.monotonic() + _TIMEOUT
    while True:
        text = _read(log)
        if "Server listening on" in text:
            return process
        if process.poll() is not None:
            if "Address already in use" in text:
                return None
            raise RuntimeError(f"sshd exited with {process.returncode}:\n{text}")
        if time.monotonic() > deadline:
            process.kill()
            process.wait()
            raise RuntimeError(f"sshd did not listen within {_TIMEOUT:g} s:\n{text}")
        time.sleep(0.01)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def _signal(pid: int, signum: signal.Signals) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _stat(pid: int) -> tuple[str, int] | None:
    """A process's state letter and parent pid; ``None`` once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes().decode("ascii", "replace")
    except OSError:
        return None
    # The command name in parentheses may hold spaces and parentheses itself.
    state, ppid = stat[stat.rindex(")") + 2 :].split()[:2]
    return state, int(ppid)


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return set()
    for name in entries:
        if name.isdigit():
            stat = _stat(int(name))
            if stat is not None:
                children.setdefault(stat[1], []).append(int(name))
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    stat = _stat(pid)
    # A zombie is dead: whoever inherited it may never reap it.
    return stat is not None and stat[0] != "Z"


def _wait_gone(pids: set[int]) -> None:
    deadline = time.monotonic() + _TIMEOUT
    while True:
        left = sorted(pid for pid in pids if _alive(pid))
        if not left:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"sshd processes still alive after SIGKILL: {left}")
        time.sleep(0.01)
