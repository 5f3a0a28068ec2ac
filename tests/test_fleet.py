"""fabmux -P: each task on every host at once, output a whole line per host, a summary."""

from __future__ import annotations

import os
import subprocess
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from fabrun import fab

from fabric_mux.group import MuxThreadingGroup
from fabric_mux.pytest_plugin import FleetFactory
from fabric_mux.testing import SshServer

FABFILE = textwrap.dedent(
    """
    import os
    from fabric import task

    MEET = {meet!r}
    COUNT = {count}

    @task
    def meet(c):
        # Every host waits here until all have arrived: only a parallel run gets
        # through (a serial one would wait for ever; the timeout ends it).
        host = c.original_host
        wait = f"while [ $(ls {{MEET}} | wc -l) -lt {{COUNT}} ]; do sleep 0.02; done"
        c.run(f"touch {{MEET}}/{{host}}; timeout 30 sh -c '{{wait}}' && echo met && echo 2nd")

    @task
    def fail_on_host2(c):
        c.run("exit 3" if c.original_host.endswith("2") else "echo fine")

    @task
    def after(c):
        c.run("echo after")

    @task
    def record(c):
        c.run(f"echo start >> {{MEET}}/log; sleep 0.1; echo end >> {{MEET}}/log")
    """
)


@pytest.fixture
def meeting_point() -> Iterator[Path]:
    """A folder every account can write to: the remote commands meet there."""
    folder = Path(tempfile.mkdtemp(prefix="fmm-", dir="/tmp"))
    folder.chmod(0o777)
    try:
        yield folder
    finally:
        subprocess.run(["rm", "-rf", str(folder)], check=False)


def project(tmp_path: Path, control_dir: Path, meet: Path, count: int, yaml: str = "") -> Path:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "fabfile.py").write_text(FABFILE.format(meet=str(meet), count=count))
    (folder / "fabric.yaml").write_text(
        "tasks:\n  executor_class: fabric_mux.MuxExecutor\n"
        f"mux:\n  control_dir: {control_dir}\n{yaml}"
    )
    return folder


def run(
    folder: Path, ssh_config: Path, hosts: str, *args: str, name: str = "fabmux"
) -> subprocess.CompletedProcess[str]:
    return fab(folder, ssh_config, hosts, *args, name=name)


def test_each_task_runs_on_all_hosts_at_once_with_each_line_marked(
    sshd: SshServer, control_dir: Path, tmp_path: Path, meeting_point: Path
) -> None:
    hosts = sshd.routes(6, prefix="web")
    folder = project(tmp_path, control_dir, meeting_point, 6)
    done = run(folder, sshd.ssh_config, ",".join(hosts), "-P", "meet")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert sorted(lines) == sorted(
        [f"[{host}] met" for host in hosts] + [f"[{host}] 2nd" for host in hosts]
    )
    assert "every host ok" in done.stderr
    assert sshd.logins() == 6


def test_a_failing_host_is_in_the_summary_and_the_exit_code_and_the_others_go_on(
    sshd: SshServer, control_dir: Path, tmp_path: Path, meeting_point: Path
) -> None:
    hosts = sshd.routes(3, prefix="node")
    folder = project(tmp_path, control_dir, meeting_point, 3)
    done = run(folder, sshd.ssh_config, ",".join(hosts), "-P", "fail-on-host2", "after")
    assert done.returncode != 0
    assert "[node1] fine" in done.stdout and "[node3] fine" in done.stdout
    assert "[node1] after" in done.stdout and "[node3] after" in done.stdout
    assert "[node2] after" not in done.stdout  # a failed host sits out what follows
    summary = done.stderr[done.stderr.index("fabric-mux: fail-on-host2, after on 3 hosts") :]
    node2 = next(line for line in summary.splitlines() if line.strip().startswith("node2"))
    assert "failed" in node2 and "in fail-on-host2: UnexpectedExit" in node2
    assert "then skipped after" in node2
    assert "1 of 3 hosts failed" in summary


def test_the_pool_size_bounds_how_many_hosts_run_at_once(
    sshd: SshServer, control_dir: Path, tmp_path: Path, meeting_point: Path
) -> None:
    hosts = sshd.routes(6, prefix="web")
    folder = project(tmp_path, control_dir, meeting_point, 6)
    done = run(folder, sshd.ssh_config, ",".join(hosts), "-P", "-z", "2", "record")
    assert done.returncode == 0, done.stderr
    running = most = 0
    for event in (meeting_point / "log").read_text().split():
        running += 1 if event == "start" else -1
        most = max(most, running)
    assert most <= 2
    assert (meeting_point / "log").read_text().split().count("end") == 6


def test_stock_fab_runs_in_parallel_from_fabric_yaml_and_reads_hosts_from_a_file(
    sshd: SshServer, control_dir: Path, tmp_path: Path, meeting_point: Path
) -> None:
    hosts = sshd.routes(4, prefix="web")
    yaml = "  parallel: true\n  pool_size: 8\n"
    folder = project(tmp_path, control_dir, meeting_point, 4, yaml)
    listing = tmp_path / "hosts.txt"
    listing.write_text("# the fleet\n" + "".join(f"{host}\n" for host in hosts) + "\n")
    done = run(folder, sshd.ssh_config, f"@{listing}", "meet", name="fab")
    assert done.returncode == 0, done.stderr
    assert sorted(line for line in done.stdout.splitlines() if line.endswith("met")) == sorted(
        f"[{host}] met" for host in hosts
    )


def test_a_fleet_behind_a_bastion_logs_in_once_each_in_parallel(
    sshd_fleet: FleetFactory, control_dir: Path, tmp_path: Path, meeting_point: Path
) -> None:
    fleet = sshd_fleet(3, bastion=True)
    folder = project(tmp_path, control_dir, meeting_point, 3)
    for _ in range(2):
        for entry in meeting_point.iterdir():
            entry.unlink()
        done = run(folder, fleet.ssh_config, ",".join(fleet.hosts), "-P", "meet")
        assert done.returncode == 0, done.stderr
    assert fleet.logins() == {"host1": 1, "host2": 1, "host3": 1, "bastion": 1}


def test_a_mux_threading_group_marks_each_line_with_its_host(
    sshd: SshServer, control_dir: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    hosts = sshd.routes(3, prefix="node")
    config = sshd.fabric_config({"mux": {"control_dir": str(control_dir)}})
    MuxThreadingGroup(*hosts, config=config).run("printf 'one\\ntwo\\nno newline'")
    out = capfd.readouterr().out.splitlines()
    assert sorted(out) == sorted(
        f"[{host}] {line}" for host in hosts for line in ("one", "two", "no newline")
    )
    assert os.path.isdir(control_dir)
