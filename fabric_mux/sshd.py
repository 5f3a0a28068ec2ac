"""One throwaway OpenSSH server on 127.0.0.1: :func:`ssh_server` and the
:class:`SshServer` it yields (see :mod:`fabric_mux.testing`)."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import fabric

from .openssh import SshdNotFound, find_sshd, openssh_prefix
from .proctree import TIMEOUT, alive, descendants, send_signal, wait_gone
from .relay import LatencyRelay
from .sshdconfig import (
    FIXED_KEYWORDS,
    HOST,
    overridden_keywords,
    relayed_host,
    ssh_config_text,
    sshd_config_text,
)

__all__ = ["SshServer", "ssh_server"]

_BIND_ATTEMPTS = 5

# "Accepted key ... found at ..." also starts with "Accepted" but comes twice per login.
_LOGIN_RE = re.compile(r"^Accepted (?!key )\S+ for (\S+) from ", re.MULTILINE)


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
            config.write(relayed_host(name, relay.port, self.port, self.user))
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
        return sum(1 for pid in descendants(self._process.pid) if alive(pid))

    def freeze(self) -> set[int]:
        """Stop (SIGSTOP) the listener and every process it spawned: a server
        whose TCP connections stay up but that answers nothing. Returns the pids.
        """
        targets = {self._process.pid}
        send_signal(self._process.pid, signal.SIGSTOP)
        # Freeze as we go, so nothing in the tree forks a child we would not see.
        while True:
            found = descendants(self._process.pid) - targets
            if not found:
                return targets
            for pid in found:
                send_signal(pid, signal.SIGSTOP)
            targets |= found

    def thaw(self) -> None:
        """Undo :meth:`freeze`."""
        for pid in {self._process.pid} | descendants(self._process.pid):
            send_signal(pid, signal.SIGCONT)

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
            send_signal(pid, signal.SIGKILL)
        process.wait()
        wait_gone(targets - {process.pid})
        self._remove_agent_sockets(targets)

    def _remove_agent_sockets(self, killed: set[int]) -> None:
        """What a connection's sshd removes as it ends, and a killed one cannot: the
        socket of an agent it forwarded (``/tmp/ssh-XXXXXXXXXX/agent.PID``, the
        account's), and its folder."""
        try:
            uid = pwd.getpwnam(self.user).pw_uid
        except KeyError:
            return
        for pid in killed:
            for path in Path("/tmp").glob(f"ssh-*/agent.{pid}"):
                try:
                    if path.lstat().st_uid == uid and path.parent.lstat().st_uid == uid:
                        path.unlink()
                        path.parent.rmdir()  # fails if something else is in it: kept
                except OSError:
                    continue


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
    sshd = find_sshd(sshd_path)
    prefix = openssh_prefix()
    # Keys made by the OpenSSH under test, which older ones can read.
    keygen = str(prefix / "bin/ssh-keygen") if prefix else shutil.which("ssh-keygen")
    if keygen is None:
        raise SshdNotFound("ssh-keygen not found in PATH")
    aliases = tuple(aliases)
    if not aliases or any(not a or any(c.isspace() for c in a) for a in aliases):
        raise ValueError(f"aliases must be non-empty words: {aliases!r}")
    options = list(sshd_options)
    overridden = overridden_keywords(options)
    if overridden & FIXED_KEYWORDS:
        raise ValueError(f"sshd_options may not set {sorted(overridden & FIXED_KEYWORDS)}")

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
            sshd_config_text(
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
            ssh_config_text(
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
    deadline = time.monotonic() + TIMEOUT
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
            raise RuntimeError(f"sshd did not listen within {TIMEOUT:g} s:\n{text}")
        time.sleep(0.01)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
