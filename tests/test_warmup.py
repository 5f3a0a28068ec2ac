"""Cold runs over many hosts start their masters together, before the first command."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import fabric
import pytest
from fabric.exceptions import GroupException
from fabrun import fab

from fabric_mux import MuxConnection
from fabric_mux.exceptions import HostKeyFailed
from fabric_mux.group import MuxSerialGroup, MuxThreadingGroup
from fabric_mux.pytest_plugin import FleetFactory
from fabric_mux.testing import SshServer

FABFILE = textwrap.dedent(
    """
    import os, stat
    from fabric import task

    CONTROL_DIR = {control_dir!r}

    @task
    def deploy(c):
        sockets = [name for name in os.listdir(CONTROL_DIR)
                   if stat.S_ISSOCK(os.lstat(os.path.join(CONTROL_DIR, name)).st_mode)]
        print(c.original_host, "masters up before its first command:", len(sockets), flush=True)
        c.run("true")
    """
)


def forget_host_key(sshd: SshServer, alias: str) -> None:
    lines = sshd.known_hosts.read_text().splitlines(keepends=True)
    sshd.known_hosts.write_text("".join(line for line in lines if not line.startswith(f"{alias} ")))


def fab_project(folder: Path, control_dir: Path) -> Path:
    project = folder / "project"
    project.mkdir()
    (project / "fabfile.py").write_text(FABFILE.format(control_dir=str(control_dir)))
    (project / "fabric.yaml").write_text(
        f"tasks:\n  executor_class: fabric_mux.MuxExecutor\nmux:\n  control_dir: {control_dir}\n"
    )
    return project


def test_a_cold_fab_over_five_hosts_starts_all_masters_first(
    sshd: SshServer, control_dir: Path, tmp_path: Path
) -> None:
    hosts = sshd.routes(5, prefix="web")
    project = fab_project(tmp_path, control_dir)
    done = fab(project, sshd.ssh_config, ",".join(hosts), "deploy")
    assert done.returncode == 0, done.stderr
    counts = [line.rsplit(" ", 1)[1] for line in done.stdout.splitlines() if "masters up" in line]
    assert counts == ["5"] * 5  # the first task already found all five
    assert sshd.logins() == 5


def test_a_host_that_cannot_start_fails_only_its_own_task(
    sshd: SshServer, control_dir: Path, tmp_path: Path
) -> None:
    hosts = sshd.routes(3, prefix="web")
    # web3's key is unknown: its master cannot start.
    known = sshd.known_hosts.read_text().splitlines()
    sshd.known_hosts.write_text(
        "".join(f"{line}\n" for line in known if not line.startswith("web3 "))
    )
    project = fab_project(tmp_path, control_dir)
    done = fab(project, sshd.ssh_config, ",".join(hosts), "deploy")
    assert done.returncode != 0
    ran = [line.split()[0] for line in done.stdout.splitlines() if "masters up" in line]
    assert ran == ["web1", "web2", "web3"]  # web3's task ran, and failed as it would alone
    assert "host key verification failed" in done.stderr
    assert sshd.logins() == 2


def test_a_fleet_behind_a_bastion_logs_in_once_per_host(
    sshd_fleet: FleetFactory, control_dir: Path, tmp_path: Path
) -> None:
    fleet = sshd_fleet(3, bastion=True)
    project = fab_project(tmp_path, control_dir)
    done = fab(project, fleet.ssh_config, ",".join(fleet.hosts), "deploy")
    assert done.returncode == 0, done.stderr
    assert fleet.logins() == {"host1": 1, "host2": 1, "host3": 1, "bastion": 1}


def test_mux_groups_open_every_master_and_keep_fabrics_results(
    sshd: SshServer, control_dir: Path
) -> None:
    hosts = sshd.routes(4, prefix="node")
    config = sshd.fabric_config({"mux": {"control_dir": str(control_dir)}})
    for group_class in (MuxThreadingGroup, MuxSerialGroup):
        group = group_class(*hosts, config=config)
        results = group.run("hostname", hide=True)
        assert sorted(c.original_host for c in results) == hosts
        assert all(isinstance(c, MuxConnection) for c in group)
        assert all(result.ok for result in results.values())
        group.close()
    assert sshd.logins() == 4  # the second group found the first one's masters


def test_a_group_member_that_cannot_start_is_its_own_failure(
    sshd: SshServer, control_dir: Path
) -> None:
    hosts = sshd.routes(2, prefix="node")
    known = sshd.known_hosts.read_text().splitlines()
    sshd.known_hosts.write_text(
        "".join(f"{line}\n" for line in known if not line.startswith("node2 "))
    )
    config: fabric.Config = sshd.fabric_config({"mux": {"control_dir": str(control_dir)}})
    group = MuxThreadingGroup(*hosts, config=config)
    with pytest.raises(GroupException) as failure:
        group.run("true", hide=True)
    results = {c.original_host: value for c, value in failure.value.result.items()}
    assert results["node1"].ok
    assert isinstance(results["node2"], HostKeyFailed)
    assert os.path.exists(str(group[0].control_path))


def test_a_master_found_up_is_asked_once_and_its_route_planned_once(
    sshd: SshServer, mux_config: fabric.Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fabric_mux.route import Route
    from fabric_mux.warmup import Starter

    first = MuxConnection(sshd.alias, config=mux_config)
    first.open()
    requests = first.mux_master.requests
    checks = requests["alive check"]
    planned: list[Route] = []
    plan = MuxConnection.route

    def counting(self: MuxConnection) -> Route:
        planned.append(plan(self))
        return planned[-1]

    monkeypatch.setattr(MuxConnection, "route", counting)
    second = MuxConnection(sshd.alias, config=mux_config)
    Starter().open(second)
    assert second.mux_master is first.mux_master
    assert requests["alive check"] - checks == 1
    assert len(planned) == 1
    assert second.run("true", hide=True).ok
    assert sshd.logins() == 1
    second.close()
    first.close()
