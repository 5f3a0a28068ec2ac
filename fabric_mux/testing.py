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

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .openssh import OPENSSH_VARIABLE as _OPENSSH_VARIABLE
from .openssh import (
    SshdNotFound,
    openssh_prefix,
    use_openssh_from_environment,
)
from .relay import LatencyRelay
from .sshd import SshServer, ssh_server
from .sshfleet import Fleet, ssh_fleet

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

# Bound here with its description: the reference documents this module's names.
#: The environment variable naming the OpenSSH to test with: a prefix holding
#: ``bin/ssh``, ``bin/ssh-keygen`` and ``sbin/sshd`` (``/opt/openssh-8.0``, say).
#: Unset or empty: the system's.
OPENSSH_VARIABLE = _OPENSSH_VARIABLE


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
