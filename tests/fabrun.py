"""Running ``fab`` (or ``fabmux``) as a user would, in a project folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

MUX_YAML = "tasks:\n  executor_class: fabric_mux.MuxExecutor\nmux:\n  control_dir: {control_dir}\n"


def program(name: str = "fab") -> str:
    """The console script installed beside this interpreter."""
    path = Path(sys.executable).with_name(name)
    found = str(path) if path.exists() else shutil.which(name)
    assert found, f"{name} is not installed"
    return found


def fab_argv(ssh_config: Path, hosts: str, *args: str, name: str = "fab") -> list[str]:
    return [program(name), "-S", str(ssh_config), "-H", hosts, *args]


def no_agent_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}


def fab(
    project: Path,
    ssh_config: Path,
    hosts: str,
    *args: str,
    name: str = "fab",
    stdin: int = subprocess.DEVNULL,
) -> subprocess.CompletedProcess[str]:
    """Run it to its end in ``project``, in a session of its own (as from a terminal)."""
    return subprocess.run(
        fab_argv(ssh_config, hosts, *args, name=name),
        cwd=project,
        env=no_agent_env(),
        stdin=stdin,
        capture_output=True,
        text=True,
        check=False,
        start_new_session=True,
        timeout=120,
    )


def run_fab(project: Path, ssh_config: Path, hosts: str, *args: str, name: str = "fab") -> str:
    """Run it to its end; its stdout, after checking that it succeeded."""
    proc = fab(project, ssh_config, hosts, *args, name=name)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout
