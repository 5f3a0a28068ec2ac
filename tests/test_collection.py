"""The mux task collection a fabfile can add, run by stock fab against a real sshd."""

from __future__ import annotations

from pathlib import Path

from fabrun import run_fab
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
        return run_fab(tmp_path, sshd.ssh_config, sshd.alias, *tasks)

    assert "no master running" in fab("mux.status")
    config = sshd.fabric_config({"mux": {"control_dir": str(control_dir)}})
    c = MuxConnection(sshd.alias, config=config)
    c.run("true")
    assert f"master running (pid={c.master_pid})" in fab("mux.status")
    assert fab("mux.stop") == f"{sshd.alias}: master stopped\n"
    assert wait_until(lambda: process_gone(c.master_pid or 0))
    assert "no master running" in fab("mux.status")
