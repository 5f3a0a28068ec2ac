"""The project's own fixtures; the servers come from fabric_mux's pytest plugin."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import fabric
import pytest

from fabric_mux.testing import ensure_account

#: The account that tests log in to when they run as root.
TEST_USER = "fmuxtest"
TEST_PASSWORD = "fmux-test-pw"


@pytest.fixture(scope="session")
def sshd_user() -> str:
    """As root: ``fmuxtest``, made if missing, with :data:`TEST_PASSWORD` and sudo
    rights (root's own shell start-up here is slow). Otherwise the current user.
    """
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid()).pw_name
    return ensure_account(TEST_USER, TEST_PASSWORD, sudoer=True)


@pytest.fixture(autouse=True)
def no_ssh_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the developer's agent and its keys out of the tests."""
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)


@pytest.fixture
def control_dir(mux_control_dir: Path) -> Path:
    return mux_control_dir


@pytest.fixture
def config(mux_config: fabric.Config) -> fabric.Config:
    return mux_config
