"""The pytest plugin, as a user's test suite gets it: installed, no conftest needed."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

USER_TEST = """
from fabric_mux import MuxConnection

def test_my_fabfile(mux_sshd, mux_config):
    c = MuxConnection(mux_sshd.alias, config=mux_config)
    assert c.run("echo hi", hide=True).stdout == "hi\\n"
    c.run("true")
    assert mux_sshd.logins() == 1
"""

#: The fixtures' old names: they work, and say they are going.
OLD_NAMES_TEST = """
import pytest
from fabric_mux import MuxConnection

def test_old_names(sshd, sshd_factory, sshd_fleet, mux_control_dir):
    config = sshd.fabric_config({"mux": {"control_dir": str(mux_control_dir)}})
    assert MuxConnection(sshd.alias, config=config).run("echo hi", hide=True).stdout == "hi\\n"
"""

#: Another project's suite, which uses none of the fixtures.
UNRELATED_TEST = """
import sys

def test_nothing_of_fabric_is_loaded():
    assert not {"fabric", "paramiko", "invoke", "cryptography"} & set(sys.modules)
"""


def test_registered_as_a_pytest_plugin() -> None:
    found: Any = entry_points()
    # Python 3.9 gives a dict of groups; 3.10 on, a selectable list.
    group = found.select(group="pytest11") if hasattr(found, "select") else found["pytest11"]
    names = {entry.value for entry in group}
    assert "fabric_mux.pytest_plugin" in names


def pytest_in(folder: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """A pytest run of another project's suite in ``folder``, as its own CI would run it."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args, str(folder)],
        cwd=folder,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **env},
    )


def test_a_users_suite_gets_the_fixtures(tmp_path: Path) -> None:
    (tmp_path / "test_user.py").write_text(USER_TEST)
    proc = pytest_in(tmp_path, "-q")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout


def test_the_old_fixture_names_work_and_warn(tmp_path: Path) -> None:
    (tmp_path / "test_old.py").write_text(OLD_NAMES_TEST)
    proc = pytest_in(tmp_path, "-q", "-W", "always::DeprecationWarning")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for old, new in (("sshd", "mux_sshd"), ("sshd_factory", "mux_sshd_factory")):
        assert f"the {old} fixture of fabric-mux is {new} now" in proc.stdout


def test_a_suite_that_uses_no_fixture_pays_nothing(tmp_path: Path) -> None:
    """No Fabric loaded, no ssh run, no header line, and a wrong FMUX_OPENSSH
    (set for another project's runs) fails nothing."""
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_other.py").write_text(UNRELATED_TEST)
    spy = tmp_path / "bin"
    spy.mkdir()
    ran = tmp_path / "ssh-ran"
    (spy / "ssh").write_text(f"#!/bin/sh\ntouch {ran}\n")
    (spy / "ssh").chmod(0o755)
    path = f"{spy}:{os.environ['PATH']}"
    proc = pytest_in(suite, "-v", PATH=path, FMUX_OPENSSH="/nonexistent")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OpenSSH" not in proc.stdout
    assert not ran.exists()


def test_a_wrong_fmux_openssh_fails_the_tests_that_ask_for_a_server(tmp_path: Path) -> None:
    (tmp_path / "test_user.py").write_text(USER_TEST)
    proc = pytest_in(tmp_path, "-q", FMUX_OPENSSH="/nonexistent")
    assert proc.returncode == 1
    assert "FMUX_OPENSSH=/nonexistent holds no bin/ssh" in proc.stdout
