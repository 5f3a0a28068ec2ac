"""Fixtures: a real sshd on 127.0.0.1, a remote account with a light shell, no agent."""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import NoReturn, Protocol

import fabric
import pytest

from fabric_mux.testing import SshdNotFound, SshServer, ensure_account, ssh_server

#: The account that tests log in to when they run as root.
TEST_USER = "fmuxtest"
TEST_PASSWORD = "fmux-test-pw"


class SshdFactory(Protocol):
    """Start one more test server; :func:`sshd_factory` stops them all."""

    def __call__(
        self,
        *,
        sshd_options: Sequence[str] = ...,
        aliases: Sequence[str] = ...,
        user: str | None = ...,
    ) -> SshServer: ...


def _missing_sshd(error: SshdNotFound) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the integration tests, but: {error}", pytrace=False)
    pytest.skip(f"no OpenSSH server: {error}")


@pytest.fixture(scope="session")
def remote_user() -> str:
    """The account the test servers let in.

    As root: ``fmuxtest``, made if missing, with :data:`TEST_PASSWORD` and sudo
    rights (root's own shell start-up here is slow). Otherwise the current user.
    """
    if os.geteuid() != 0:
        # Not getpass.getuser(): $USER may name someone else, sshd goes by the uid.
        return pwd.getpwuid(os.geteuid()).pw_name
    return ensure_account(TEST_USER, TEST_PASSWORD, sudoer=True)


@pytest.fixture(autouse=True)
def no_ssh_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the developer's agent and its keys out of the tests."""
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)


@pytest.fixture
def sshd_factory(remote_user: str) -> Iterator[SshdFactory]:
    """Start extra servers, e.g. with ``sshd_options=["MaxSessions 2"]``."""
    with ExitStack() as stack:

        def start(
            *,
            sshd_options: Sequence[str] = (),
            aliases: Sequence[str] = ("fmux-test",),
            user: str | None = None,
        ) -> SshServer:
            # Short: control sockets for this server may be made beside it.
            folder = tempfile.mkdtemp(prefix="fmux-", dir="/tmp")
            stack.callback(shutil.rmtree, folder, ignore_errors=True)
            server = ssh_server(
                Path(folder),
                user=user or remote_user,
                aliases=aliases,
                sshd_options=sshd_options,
            )
            try:
                return stack.enter_context(server)
            except SshdNotFound as error:
                _missing_sshd(error)

        yield start


@pytest.fixture
def sshd(sshd_factory: SshdFactory) -> SshServer:
    """A fresh server for :func:`remote_user`, alias ``fmux-test``."""
    return sshd_factory()


@pytest.fixture
def control_dir() -> Iterator[Path]:
    """A private folder for control sockets, short enough for their paths."""
    folder = Path(tempfile.mkdtemp(prefix="fmc-", dir="/tmp"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def config(sshd: SshServer, control_dir: Path) -> fabric.Config:
    """Fabric config that reaches :func:`sshd` and keeps sockets in :func:`control_dir`."""
    return sshd.fabric_config({"mux": {"control_dir": str(control_dir)}})
