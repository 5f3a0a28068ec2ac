"""The pytest plugin, as a user's test suite gets it: installed, no conftest needed."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

USER_TEST = """
from fabric_mux import MuxConnection

def test_my_fabfile(sshd, mux_config):
    c = MuxConnection(sshd.alias, config=mux_config)
    assert c.run("echo hi", hide=True).stdout == "hi\\n"
    c.run("true")
    assert sshd.logins() == 1
"""


def test_registered_as_a_pytest_plugin() -> None:
    found: Any = entry_points()
    # Python 3.9 gives a dict of groups; 3.10 on, a selectable list.
    group = found.select(group="pytest11") if hasattr(found, "select") else found["pytest11"]
    names = {entry.value for entry in group}
    assert "fabric_mux.pytest_plugin" in names


def test_a_users_suite_gets_the_fixtures(tmp_path: Path) -> None:
    (tmp_path / "test_user.py").write_text(USER_TEST)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout
