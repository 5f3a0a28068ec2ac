"""pytest fixtures for testing fabfiles against a real, throwaway OpenSSH server.

Installed with fabric-mux (entry point ``pytest11``), so a test can simply ask
for them::

    def test_deploy(mux_sshd, mux_config):
        c = MuxConnection(mux_sshd.alias, config=mux_config)
        c.run("true")
        assert mux_sshd.logins() == 1

``mux_sshd`` is an :class:`~fabric_mux.testing.SshServer` on 127.0.0.1 with its
own host key, client key, known_hosts, an ssh_config naming it ``fmux-test``,
and a login counter. Override ``mux_sshd_user`` to log in as another account
(root only). Without an ``sshd`` on the machine the tests using it are skipped,
or fail when the ``CI`` environment variable is set.

``FMUX_OPENSSH=/opt/openssh-8.0`` runs the servers (and, from the first
fixture on, the clients found on ``PATH``) of that OpenSSH.

The plugin costs nothing where its fixtures are not used: it imports only
pytest when it loads (Fabric and the servers' code on a fixture's first use),
adds no line to pytest's header, and reads ``FMUX_OPENSSH`` only when a
fixture asks. ``sshd``, ``sshd_factory``, ``sshd_fleet`` and ``sshd_user`` are
the fixtures' old names, kept for one release: each warns when used.
"""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, Protocol

import pytest

if TYPE_CHECKING:
    import fabric

    from .testing import Fleet, SshdNotFound, SshServer

__all__ = [
    "FleetFactory",
    "SshdFactory",
    "mux_config",
    "mux_control_dir",
    "mux_sshd",
    "mux_sshd_factory",
    "mux_sshd_fleet",
    "mux_sshd_user",
]


class SshdFactory(Protocol):
    """Start one more server; every one is stopped when the test ends."""

    def __call__(
        self,
        *,
        sshd_options: Sequence[str] = (),
        aliases: Sequence[str] = ("fmux-test",),
        user: str | None = None,
        latency_ms: float | None = None,
    ) -> SshServer:
        """A new server on 127.0.0.1.

        :param sshd_options: sshd_config lines of its own (``"MaxSessions 2"``).
        :param aliases: the host names its ssh_config gives it.
        :param user: the account that logs in (default: :func:`mux_sshd_user`).
        :param latency_ms: reach it through a :class:`~fabric_mux.relay.LatencyRelay`
            adding this many milliseconds each way.
        """
        ...


class FleetFactory(Protocol):
    """Start several servers in one ssh_config; every one is stopped when the test ends."""

    def __call__(
        self, count: int = 3, *, bastion: bool = False, latency_ms: float | None = None
    ) -> Fleet:
        """``count`` new servers, ``host1``, ``host2``... in one ssh_config.

        :param bastion: reach them through one more server, ``bastion``
            (``ProxyJump bastion``), the only one reached directly.
        :param latency_ms: put each server behind a relay adding this many
            milliseconds each way.
        """
        ...


def _missing_sshd(error: SshdNotFound) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the sshd tests, but: {error}", pytrace=False)
    pytest.skip(f"no OpenSSH server: {error}")


def _openssh_from_environment() -> None:
    """``FMUX_OPENSSH``'s clients first on ``PATH`` (a wrong value fails the test
    that asked for a server, not every test of the run)."""
    from .testing import SshdNotFound, use_openssh_from_environment

    try:
        use_openssh_from_environment()
    except SshdNotFound as error:
        pytest.fail(str(error), pytrace=False)


@pytest.fixture(scope="session")
def mux_sshd_user(sshd_user: str) -> str:
    """The account the servers let in: by default the current one."""
    return sshd_user


@pytest.fixture
def mux_sshd_factory(mux_sshd_user: str) -> Iterator[SshdFactory]:
    """Start servers with options of their own, e.g. ``sshd_options=["MaxSessions 2"]``,
    or behind a slow link: ``latency_ms=25`` (each way; ``server.relay`` counts round trips)."""
    _openssh_from_environment()
    from .testing import SshdNotFound, ssh_server

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
                user=user or mux_sshd_user,
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
def mux_sshd(mux_sshd_factory: SshdFactory) -> SshServer:
    """A fresh server for :func:`mux_sshd_user`, alias ``fmux-test``."""
    return mux_sshd_factory()


@pytest.fixture
def mux_sshd_fleet(mux_sshd_user: str) -> Iterator[FleetFactory]:
    """``mux_sshd_fleet(3, bastion=True)``: servers ``host1`` to ``host3`` behind
    ``bastion``, in one ssh_config (``fleet.ssh_config``, ``fleet.fabric_config()``)."""
    _openssh_from_environment()
    from .testing import SshdNotFound, ssh_fleet

    with ExitStack() as stack:

        def start(
            count: int = 3, *, bastion: bool = False, latency_ms: float | None = None
        ) -> Fleet:
            folder = tempfile.mkdtemp(prefix="fmf-", dir="/tmp")
            stack.callback(shutil.rmtree, folder, ignore_errors=True)
            fleet = ssh_fleet(
                Path(folder), count, bastion=bastion, user=mux_sshd_user, latency_ms=latency_ms
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
def mux_config(mux_sshd: SshServer, mux_control_dir: Path) -> fabric.Config:
    """A Fabric config that reaches :func:`mux_sshd`, sockets in :func:`mux_control_dir`."""
    return mux_sshd.fabric_config({"mux": {"control_dir": str(mux_control_dir)}})


# -- the old names, for one release --------------------------------------------------------


def _renamed(old: str, new: str) -> None:
    warnings.warn(
        f"the {old} fixture of fabric-mux is {new} now; {old} goes in the next release",
        DeprecationWarning,
        stacklevel=2,
    )


@pytest.fixture(scope="session")
def sshd_user() -> str:
    """Deprecated name: override :func:`mux_sshd_user`. (Still read: an override of
    this name keeps working for one release.)"""
    # Not getpass.getuser(): $USER may name someone else; sshd goes by the uid.
    return pwd.getpwuid(os.geteuid()).pw_name


@pytest.fixture
def sshd_factory(mux_sshd_factory: SshdFactory) -> SshdFactory:
    """Deprecated name of :func:`mux_sshd_factory`."""
    _renamed("sshd_factory", "mux_sshd_factory")
    return mux_sshd_factory


@pytest.fixture
def sshd(mux_sshd: SshServer) -> SshServer:
    """Deprecated name of :func:`mux_sshd`."""
    _renamed("sshd", "mux_sshd")
    return mux_sshd


@pytest.fixture
def sshd_fleet(mux_sshd_fleet: FleetFactory) -> FleetFactory:
    """Deprecated name of :func:`mux_sshd_fleet`."""
    _renamed("sshd_fleet", "mux_sshd_fleet")
    return mux_sshd_fleet
