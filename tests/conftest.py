"""Fixtures: a real sshd on 127.0.0.1, a remote account with a light shell, no agent."""

from __future__ import annotations

import fcntl
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

from fabric_mux.testing import SshdNotFound, SshServer, ssh_server

#: The account that tests log in to when they run as root.
TEST_USER = "fmuxtest"
TEST_PASSWORD = "fmux-test-pw"
SUDOERS = Path("/etc/sudoers.d") / TEST_USER


class SshdFactory(Protocol):
    """Start one more test server; :func:`sshd_factory` stops them all."""

    def __call__(
        self,
        *,
        sshd_options: Sequence[str] = ...,
        aliases: Sequence[str] = ...,
        user: str | None = ...,
    ) -> SshServer: ...


def _run(argv: list[str], stdin: str = "") -> None:
    result = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({result.returncode}): {result.stderr.strip()}")


def _write_sudoers() -> None:
    if shutil.which("visudo") is None:
        # No sudo here: the tests that need it fail with "sudo: command not found".
        return
    text = f"{TEST_USER} ALL=(ALL:ALL) ALL\n"
    if SUDOERS.is_file() and SUDOERS.read_text() == text:
        if SUDOERS.stat().st_mode & 0o777 == 0o440:
            return
    # sudo ignores files whose names hold a dot, so a half-written one does no harm.
    draft = SUDOERS.with_name(f".{TEST_USER}.new")
    draft.write_text(text)
    draft.chmod(0o440)
    _run(["visudo", "-cf", str(draft)])
    os.replace(draft, SUDOERS)


def _ensure_test_account() -> None:
    # Parallel workers (pytest-xdist) would race useradd.
    with open("/tmp/fmux-test-account.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            pwd.getpwnam(TEST_USER)
        except KeyError:
            _run(["useradd", "-m", "-s", "/bin/bash", TEST_USER])
        # useradd leaves the password locked, and sshd without PAM refuses such accounts.
        _run(["chpasswd"], stdin=f"{TEST_USER}:{TEST_PASSWORD}\n")
        _write_sudoers()


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
    _ensure_test_account()
    return TEST_USER


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
