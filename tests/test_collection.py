"""The mux task collection a fabfile can add, run by stock fab against a real sshd."""

from __future__ import annotations

import inspect
from pathlib import Path

from fabric.tasks import ConnectionCall
from fabrun import run_fab
from invoke.executor import Executor
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

MUX_EXECUTOR = "tasks:\n  executor_class: fabric_mux.MuxExecutor\n"


def stock_executor_runs_host_tasks() -> bool:
    """Whether stock fab's executor can run a task on a host with this fabric and
    invoke: fabric 3.2.0-3.2.2's ConnectionCall takes none of the arguments invoke 3
    passes to ``make_context`` (fabric 3.2.3 keeps invoke below 3). MuxExecutor
    takes them."""
    takes = inspect.signature(ConnectionCall.make_context).parameters
    passes = "core_parse_result" in inspect.getsource(Executor.execute)
    return (
        not passes
        or "core_parse_result" in takes
        or any(parameter.kind is parameter.VAR_KEYWORD for parameter in takes.values())
    )


def test_status_and_stop_for_the_hosts_given(
    sshd: SshServer, control_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "fabfile.py").write_text(FABFILE)
    # Stock fab's own executor, where it runs tasks on hosts at all.
    executor = "" if stock_executor_runs_host_tasks() else MUX_EXECUTOR
    (tmp_path / "fabric.yaml").write_text(f"{executor}mux:\n  control_dir: {control_dir}\n")

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
