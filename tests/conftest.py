"""The project's own fixtures; the servers come from fabric_mux's pytest plugin."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import fabric
import pytest

from devtools.accounts import TEST_USER, Account, lent_account
from fabric_mux import terminal
from fabric_mux.pytest_plugin import FleetFactory, SshdFactory
from fabric_mux.testing import (
    OPENSSH_VARIABLE,
    SshdNotFound,
    SshServer,
    use_openssh_from_environment,
)

# TEST_USER: the account that tests log in to when they run as root (its shell
# starts fast; root's here runs pyenv). FMUX_TEST_USER names another, which
# keeps a second run on the machine apart from the first.


def pytest_configure(config: pytest.Config) -> None:
    """With ``FMUX_OPENSSH`` set, its clients come first on ``PATH`` for the whole run."""
    try:
        use_openssh_from_environment()
    except SshdNotFound as error:
        raise pytest.UsageError(str(error)) from None


#: The first of ~/.ssh, ~/.ssh/fabric-mux and its locks that this run made in the
#: account's home (see controldir.user_locks, and the default control folder's
#: kept ssh -G answers), to be removed when it ends.
_MADE_AT_HOME: list[Path] = []


def pytest_sessionstart(session: pytest.Session) -> None:
    ssh = Path(pwd.getpwuid(os.geteuid()).pw_dir) / ".ssh"
    for folder in (ssh, ssh / "fabric-mux", ssh / "fabric-mux" / "locks"):
        if not os.path.lexists(folder):
            _MADE_AT_HOME.append(folder)
            return


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Tests that ride a user's master take its start's lock in the account's home,
    as every fabric-mux process does, and runs with the default control folder
    keep ssh -G answers there: what the run made is removed."""
    for made in _MADE_AT_HOME:
        ours = made / "fabric-mux" if made.name == ".ssh" else made
        if ours.is_dir() and not ours.is_symlink():
            shutil.rmtree(ours, ignore_errors=True)
        with contextlib.suppress(OSError):
            made.rmdir()  # ~/.ssh: kept if anything else came into it


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


@pytest.fixture(scope="session")
def test_account() -> Iterator[Account | None]:
    """As root: :data:`TEST_USER`, lent for the session with a fresh random
    password and sudo rights, both taken back at the end. Otherwise None."""
    if os.geteuid() != 0:
        yield None
        return
    with lent_account(TEST_USER, sudoer=True) as account:
        yield account


@pytest.fixture(scope="session")
def mux_sshd_user(test_account: Account | None) -> str:
    """The account the servers let in: :func:`test_account`, or the current one."""
    if test_account is None:
        return pwd.getpwuid(os.geteuid()).pw_name
    return test_account.name


# The suite's own short names for the plugin's fixtures.


@pytest.fixture(scope="session")
def sshd_user(mux_sshd_user: str) -> str:
    return mux_sshd_user


@pytest.fixture
def sshd_factory(mux_sshd_factory: SshdFactory) -> SshdFactory:
    return mux_sshd_factory


@pytest.fixture
def sshd(mux_sshd: SshServer) -> SshServer:
    return mux_sshd


@pytest.fixture
def sshd_fleet(mux_sshd_fleet: FleetFactory) -> FleetFactory:
    return mux_sshd_fleet


@pytest.fixture
def test_password(test_account: Account | None) -> str:
    """The remote account's password (known only when the suite made the account)."""
    if test_account is None or test_account.password is None:
        pytest.skip("only root lends an account whose password the tests know")
    return test_account.password


@pytest.fixture
def remote_pty() -> None:
    """Sessions with a pty need an sshd run by root: it gives the pty to the user
    (chown), and a non-root sshd cannot, so it ends the whole connection."""
    if os.geteuid() != 0:
        pytest.skip("a non-root sshd cannot give a session its pty (chown): it drops the link")


@pytest.fixture(autouse=True)
def own_state_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Parallel runs list failed hosts in $XDG_STATE_HOME: the test's own, not the
    developer's (the programs the tests start inherit it)."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))


@pytest.fixture(autouse=True)
def no_ssh_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the developer's agent and its keys out of the tests."""
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)


@pytest.fixture(autouse=True)
def no_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Never ask on the developer's terminal: prompts no secret answers are declined,
    as they are in CI, which has no terminal."""
    monkeypatch.setattr(terminal, "terminal_available", lambda: False)


class Flag:
    """A file the test creates when a remote command may go on.

    Servers and tests share this machine's files, so a remote command can wait
    for it: synchronisation on a condition, not on time.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def waited_for(self, then: str = "true") -> str:
        """A remote command that waits for the flag, then runs ``then``."""
        return f"while [ ! -e {self.path} ]; do sleep 0.02; done; {then}"

    def raise_(self) -> None:
        self.path.touch()


@pytest.fixture
def flag() -> Iterator[Flag]:
    """A :class:`Flag` in a folder every account can read."""
    folder = Path(tempfile.mkdtemp(prefix="fmf-", dir="/tmp"))
    folder.chmod(0o755)
    try:
        yield Flag(folder / "go")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def control_dir(mux_control_dir: Path) -> Path:
    return mux_control_dir


@pytest.fixture
def config(mux_config: fabric.Config) -> fabric.Config:
    return mux_config
