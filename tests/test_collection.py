"""The mux task collection a fabfile can add, run by stock fab against a real sshd."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from waiting import process_gone, wait_until

from fabric_mux import MuxConnection
from fabric_mux.testing import SshServer

FABFILE = """
from fabric import task
from invoke import Collection
from fabric_mux.collection import mux

@task
def hello(c):
    c.run("echo hello")

ns = Collection(hello, mux)
"""


def test_status_and_stop_for_the_hosts_given(
    sshd: SshServer, control_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "fabfile.py").write_text(FABFILE)
    (tmp_path / "fabric.yaml").write_text(f"mux:\n  control_dir: {control_dir}\n")  # stock executor

    def fab(*tasks: str) -> str:
        proc = subprocess.run(
            [
                str(Path(sys.executable).with_name("fab")),
                "-S",
                str(sshd.ssh_config),
                "-H",
                sshd.alias,
                *tasks,
            ],
            cwd=tmp_path,
            env={k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    assert "no master running" in fab("mux.status")
    config = sshd.fabric_config({"mux": {"control_dir": str(control_dir)}})
    c = MuxConnection(sshd.alias, config=config)
    c.run("true")
    assert f"master running (pid={c.master_pid})" in fab("mux.status")
    assert fab("mux.stop") == f"{sshd.alias}: master stopped\n"
    assert wait_until(lambda: process_gone(c.master_pid or 0))
    assert "no master running" in fab("mux.status")
