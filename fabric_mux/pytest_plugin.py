"""pytest fixtures for testing fabfiles against a real, throwaway OpenSSH server.

Installed with fabric-mux (entry point ``pytest11``), so a test can simply ask
for them::

    def test_deploy(sshd, mux_config):
        c = MuxConnection(sshd.alias, config=mux_config)
        c.run("true")
        assert sshd.logins() == 1

``sshd`` is an :class:`~fabric_mux.testing.SshServer` on 127.0.0.1 with its own
host key, client key, known_hosts, an ssh_config naming it ``fmux-test``, and
a login counter. Override ``sshd_user`` to log in as another account (root
only). Without an ``sshd`` on the machine the tests using it are skipped, or
fail when the ``CI`` environment variable is set.

``FMUX_OPENSSH=/opt/openssh-8.0 pytest`` runs every test with that OpenSSH:
servers with its ``sbin/sshd``, clients from its ``bin``, put first on ``PATH``
for the whole run.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import NoReturn, Protocol

import fabric
import pytest

from .testing import (
    OPENSSH_VARIABLE,
    Fleet,
    SshdNotFound,
    SshServer,
    ssh_fleet,
    ssh_server,
    use_openssh_from_environment,
)

__all__ = [
    "FleetFactory",
    "SshdFactory",
    "mux_config",
    "mux_control_dir",
    "sshd",
    "sshd_factory",
    "sshd_fleet",
    "sshd_user",
]


def pytest_configure(config: pytest.Config) -> None:
    """With ``FMUX_OPENSSH`` set, its clients come first on ``PATH`` for the run."""
    try:
        use_openssh_from_environment()
    except SshdNotFound as error:
        raise pytest.UsageError(str(error)) from None


def pytest_report_header(config: pytest.Config) -> str:
    """Which OpenSSH the run uses, as ``ssh -V`` says."""
    where = os.environ.get(OPENSSH_VARIABLE) or "the system's"
    try:
        said = subprocess.run(
            ["ssh", "-V"], stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
        ).stderr.strip()
    except OSError as error:
        said = f"no ssh: {error}"
    return f"OpenSSH ({OPENSSH_VARIABLE}: {where}): {said}"


class SshdFactory(Protocol):
    """Start one more server; every one is stopped when the test ends."""

    def __call__(
        self,
        *,
        sshd_options: Sequence[str] = ...,
        aliases: Sequence[str] = ...,
        user: str | None = ...,
        latency_ms: float | None = ...,
    ) -> SshServer: ...


def _missing_sshd(error: SshdNotFound) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the sshd tests, but: {error}", pytrace=False)
    pytest.skip(f"no OpenSSH server: {error}")


@pytest.fixture(scope="session")
def sshd_user() -> str:
    """The account the servers let in: by default the current one."""
    # Not getpass.getuser(): $USER may name someone else; sshd goes by the uid.
    return pwd.getpwuid(os.geteuid()).pw_name


@pytest.fixture
def sshd_factory(sshd_user: str) -> Iterator[SshdFactory]:
    """Start servers with options of their own, e.g. ``sshd_options=["MaxSessions 2"]``,
    or behind a slow link: ``latency_ms=25`` (each way; ``server.relay`` counts round trips)."""
    with ExitStack() as stack:

        def start(
            *,
            sshd_options: Sequence[str] = (),
            aliases: Sequence[str] = ("fmux-test",),
            user: str | None = None,
            latency_ms: float | None = None,
        ) -> SshServer:
            # Short, under /tmp: control sockets may be made beside it.
            folder = tempfile.mkdtemp(prefix="fmux-", dir="/tmp")
            stack.callback(shutil.rmtree, folder, ignore_errors=True)
            server = ssh_server(
                Path(folder),
                user=user or sshd_user,
                aliases=aliases,
                sshd_options=sshd_options,
                latency_ms=latency_ms,
            )
            try:
                return stack.enter_context(server)
            except SshdNotFound as error:
                _missing_sshd(error)

        yield start


@pytest.fixture
def sshd(sshd_factory: SshdFactory) -> SshServer:
    """A fresh server for :func:`sshd_user`, alias ``fmux-test``."""
    return sshd_factory()


class FleetFactory(Protocol):
    """Start several servers in one ssh_config; every one is stopped when the test ends."""

    def __call__(
        self, count: int = ..., *, bastion: bool = ..., latency_ms: float | None = ...
    ) -> Fleet: ...


@pytest.fixture
def sshd_fleet(sshd_user: str) -> Iterator[FleetFactory]:
    """``sshd_fleet(3, bastion=True)``: servers ``host1``..``host3`` behind ``bastion``,
    in one ssh_config (``fleet.ssh_config``, ``fleet.fabric_config()``)."""
    with ExitStack() as stack:

        def start(
            count: int = 3, *, bastion: bool = False, latency_ms: float | None = None
        ) -> Fleet:
            folder = tempfile.mkdtemp(prefix="fmf-", dir="/tmp")
            stack.callback(shutil.rmtree, folder, ignore_errors=True)
            fleet = ssh_fleet(
                Path(folder), count, bastion=bastion, user=sshd_user, latency_ms=latency_ms
            )
            try:
                return stack.enter_context(fleet)
            except SshdNotFound as error:
                _missing_sshd(error)

        yield start


@pytest.fixture
def mux_control_dir() -> Iterator[Path]:
    """A private folder for control sockets, short enough for their paths."""
    folder = Path(tempfile.mkdtemp(prefix="fmc-", dir="/tmp"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def mux_config(sshd: SshServer, mux_control_dir: Path) -> fabric.Config:
    """A Fabric config that reaches :func:`sshd`, sockets in :func:`mux_control_dir`."""
    return sshd.fabric_config({"mux": {"control_dir": str(mux_control_dir)}})
