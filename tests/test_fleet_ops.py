"""Fleet operations against real servers: rolling runs stopped by their failure
budget, the failed-hosts file and reruns from it, gathered output, host ranges,
the JSON report. Logins and commands are counted on the servers."""

from __future__ import annotations

import json
import subprocess
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import fabric
import pytest
from fabrun import fab, no_agent_env, program

from fabric_mux.master import master_pids
from fabric_mux.pytest_plugin import FleetFactory
from fabric_mux.route import Route
from fabric_mux.testing import SshServer

FABFILE = textwrap.dedent(
    """
    from fabric import task

    MEET = {meet!r}

    @task
    def deploy(c):
        # A host fails where its flag says so; each step leaves a mark.
        c.run(f"test ! -e {{MEET}}/fail-{{c.original_host}}")
        c.run(f"echo {{c.original_host}} deploy >> {{MEET}}/log")

    @task
    def restart(c):
        c.run(f"echo {{c.original_host}} restart >> {{MEET}}/log")

    @task
    def uptime(c):
        c.run(f"cat {{MEET}}/say-{{c.original_host}} 2>/dev/null || echo up 3 days")

    @task
    def note(c):
        # A task of this machine (no host): each call leaves one local mark.
        with open(f"{{MEET}}/log", "a") as marks:
            marks.write(f"note {{type(c).__name__}}\\n")

    @task(pre=[note], post=[note])
    def rolled(c):
        restart(c)
    """
)


@pytest.fixture
def meet() -> Iterator[Path]:
    """A folder every account can write to: the remote commands' marks."""
    folder = Path(tempfile.mkdtemp(prefix="fmo-", dir="/tmp"))
    folder.chmod(0o777)
    (folder / "log").touch(0o666)
    (folder / "log").chmod(0o666)
    try:
        yield folder
    finally:
        subprocess.run(["rm", "-rf", str(folder)], check=False)


def project(tmp_path: Path, control_dir: Path, meet: Path, yaml: str = "") -> Path:
    folder = tmp_path / "project"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "fabfile.py").write_text(FABFILE.format(meet=str(meet)))
    (folder / "fabric.yaml").write_text(
        "tasks:\n  executor_class: fabric_mux.MuxExecutor\n"
        f"mux:\n  control_dir: {control_dir}\n  failed_hosts: {tmp_path / 'failed'}\n{yaml}"
    )
    return folder


def log(meet: Path) -> list[str]:
    """The marks the hosts left, in the order they were left."""
    return (meet / "log").read_text().splitlines()


def listed(path: Path) -> list[str]:
    """The hosts of a host file (comments and blanks left out)."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


@pytest.mark.parametrize("how", ["flags", "fabric.yaml"])
def test_a_rollout_stopped_by_its_budget_leaves_the_later_batches_untouched(
    sshd_fleet: FleetFactory, control_dir: Path, tmp_path: Path, meet: Path, how: str
) -> None:
    fleet = sshd_fleet(6)
    (meet / "fail-host2").touch()
    report = tmp_path / "report.json"
    if how == "flags":
        folder = project(tmp_path, control_dir, meet)
        args = ["--serial", "2", "--max-fail", "0", "--report", str(report)]
        name = "fabmux"
    else:
        yaml = f"  serial: 2\n  max_fail: 0\n  report: {report}\n"
        folder = project(tmp_path, control_dir, meet, yaml)
        args, name = [], "fab"
    done = fab(folder, fleet.ssh_config, "host[1-6]", *args, "deploy", "restart", name=name)
    assert done.returncode == 1, done.stderr
    # host2 failed the first task: the budget was spent, so no task started after
    # it, not even on host1 of the same batch; no later batch started at all.
    assert log(meet) == ["host1 deploy"]
    logins = fleet.logins()
    assert [logins[f"host{n}"] for n in (1, 2, 5, 6)] == [1, 1, 0, 0]
    # The next batch's masters started while the first worked: stopped unused.
    assert logins["host3"] <= 1 and logins["host4"] <= 1
    config = fleet.fabric_config({"mux": {"control_dir": str(control_dir)}})
    up = {host: bool(master_pids(master_path(host, config))) for host in fleet.hosts}
    assert up == {f"host{n}": n <= 2 for n in range(1, 7)}
    said = done.stderr[done.stderr.index("fabric-mux: deploy, restart on 6 hosts") :]
    assert "in 3 batches (2, 2, 2)" in said
    assert "  stopped      host1 (1)  did not run restart" in said
    assert "  not started  host[3-6] (4)" in said
    assert "the run stopped: 1 of 2 hosts started failed, more than its failure budget" in said
    assert listed(tmp_path / "failed") == [f"host{n}" for n in range(1, 7)]
    data = json.loads(report.read_text())
    statuses = {host["host"]: host["status"] for host in data["hosts"]}
    assert statuses == {
        "host1": "stopped",
        "host2": "failed",
        **{f"host{n}": "not started" for n in range(3, 7)},
    }
    failed = next(host for host in data["hosts"] if host["host"] == "host2")
    assert failed["exit_code"] == 1 and failed["failed_task"] == "deploy"
    assert data["batches"] == [2, 2, 2] and data["stopped"]


def master_path(host: str, config: fabric.Config) -> str:
    """Where ``host``'s master of fabric-mux's own is."""
    return Route.for_host(host, config).master(make_folder=False).control_path


def test_a_rolling_run_runs_every_task_on_a_batch_before_the_next_a_canary_first(
    sshd_fleet: FleetFactory, control_dir: Path, tmp_path: Path, meet: Path
) -> None:
    fleet = sshd_fleet(5)
    folder = project(tmp_path, control_dir, meet)
    args = ["--serial", "1,50%", "deploy", "restart"]
    done = fab(folder, fleet.ssh_config, "host[1-5]", *args, name="fabmux")
    assert done.returncode == 0, done.stderr
    marks = log(meet)
    assert marks[:2] == ["host1 deploy", "host1 restart"]  # the canary, alone
    batches = [["host2", "host3"], ["host4", "host5"]]  # 50% of 5: 2 hosts a batch
    for number, batch in enumerate(batches):
        seen = marks[2 + 4 * number : 6 + 4 * number]
        assert sorted(seen) == sorted(f"{h} {t}" for h in batch for t in ("deploy", "restart"))
        # Within a batch, each task on every host before the next task.
        assert {line.split()[1] for line in seen[:2]} == {"deploy"}
    assert fleet.logins() == {f"host{n}": 1 for n in range(1, 6)}
    assert "in 3 batches (1, 2, 2)" in done.stderr and "every host ok" in done.stderr


def test_the_failed_hosts_file_holds_exactly_them_and_reruns_them(
    sshd_fleet: FleetFactory, control_dir: Path, tmp_path: Path, meet: Path
) -> None:
    fleet = sshd_fleet(5)
    folder = project(tmp_path, control_dir, meet)
    for host in ("host2", "host4"):
        (meet / f"fail-{host}").touch()
    done = fab(folder, fleet.ssh_config, "host[1-5]", "-P", "deploy", name="fabmux")
    assert done.returncode == 1
    failed = tmp_path / "failed"
    assert listed(failed) == ["host2", "host4"]
    assert f"-H @{failed}" in done.stderr
    # Fixed: the rerun names exactly them, and runs on nobody else.
    for host in ("host2", "host4"):
        (meet / f"fail-{host}").unlink()
    (meet / "log").write_text("")
    again = fab(folder, fleet.ssh_config, f"@{failed}", "-P", "deploy", name="fabmux")
    assert again.returncode == 0, again.stderr
    assert sorted(log(meet)) == ["host2 deploy", "host4 deploy"]
    assert "  ok           host[2,4] (2)" in again.stderr


def test_gathered_output_of_64_hosts_with_two_outputs_is_two_blocks(
    sshd: SshServer, control_dir: Path, tmp_path: Path, meet: Path
) -> None:
    hosts = sshd.routes(64, prefix="web")
    for host in hosts[60:]:
        (meet / f"say-{host}").write_text("down\n")
    folder = project(tmp_path, control_dir, meet)
    done = fab(folder, sshd.ssh_config, "web[1-64]", "-P", "--gather", "uptime", name="fabmux")
    assert done.returncode == 0, done.stderr
    rule = "-" * 15
    assert done.stdout.splitlines() == [
        rule, "web[1-60] (60)", rule, "| up 3 days",
        rule, "web[61-64] (4)", rule, "| down",
    ]  # fmt: skip
    assert "  ok           web[1-64] (64)" in done.stderr
    assert sshd.logins() == 64


def test_gathered_output_groups_what_hosts_sent_and_no_host_forges_a_heading(
    sshd: SshServer, control_dir: Path, tmp_path: Path, meet: Path
) -> None:
    hosts = sshd.routes(5, prefix="r")
    said = {
        "r1": "---------------\nr2 (1)\n---------------\n",  # another host's heading
        "r2": "\x1b\n",  # an escape byte
        "r3": "\\e\n",  # the text \e
        "r4": "ok \n",
        "r5": "ok\n",
    }
    for host, text in said.items():
        (meet / f"say-{host}").write_text(text)
    folder = project(tmp_path, control_dir, meet)
    done = fab(folder, sshd.ssh_config, "r[1-5]", "-P", "--gather", "uptime", name="fabmux")
    assert done.returncode == 0, done.stderr
    rule = "-" * 15
    assert done.stdout.splitlines() == [
        rule, "r1 (1)", rule, f"| {rule}", "| r2 (1)", f"| {rule}",
        rule, "r2 (1)", rule, "| \\e",
        rule, "r3 (1)", rule, "| \\\\e",
        rule, "r4 (1)", rule, "| ok\\x20",
        rule, "r5 (1)", rule, "| ok",
    ]  # fmt: skip
    assert sshd.logins() == len(hosts)


def test_a_bad_host_range_is_one_line_naming_it(
    sshd: SshServer, control_dir: Path, tmp_path: Path, meet: Path
) -> None:
    folder = project(tmp_path, control_dir, meet)
    for name, flags in (("fabmux", ["-P"]), ("fabmux", []), ("fab", [])):
        done = fab(folder, sshd.ssh_config, "web[3-1]", *flags, "deploy", name=name)
        assert done.returncode == 1
        assert done.stderr == (
            "fabric-mux: the host range 'web[3-1]' is not valid: the range 3-1 goes down\n"
        )
    listing = tmp_path / "hosts.txt"
    listing.write_text("# the fleet\nweb[1-2]\nweb[x]\n")
    done = fab(folder, sshd.ssh_config, f"@{listing}", "-P", "deploy", name="fabmux")
    assert done.returncode == 1 and "'web[x]' is not valid" in done.stderr
    assert "Traceback" not in done.stderr
    assert sshd.logins() == 0 and log(meet) == []


@pytest.mark.parametrize(
    ("name", "yaml", "flags"),
    [
        ("fab", "  parallel: true\n", []),
        ("fabmux", "", ["-P"]),
        ("fabmux", "", ["--serial", "1"]),
    ],
)
def test_a_task_of_this_machine_runs_once_in_a_parallel_run_with_no_hosts(
    tmp_path: Path, control_dir: Path, meet: Path, name: str, yaml: str, flags: list[str]
) -> None:
    folder = project(tmp_path, control_dir, meet, yaml)
    done = subprocess.run(
        [program(name), *flags, "note", "note"],
        cwd=folder,
        env=no_agent_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert log(meet) == ["note Context", "note Context"]  # each call once


def test_tasks_of_this_machine_around_a_rolling_run_run_once(
    sshd_fleet: FleetFactory, control_dir: Path, tmp_path: Path, meet: Path
) -> None:
    fleet = sshd_fleet(2)
    folder = project(tmp_path, control_dir, meet)
    done = fab(folder, fleet.ssh_config, "host[1-2]", "--serial", "1", "rolled", name="fabmux")
    assert done.returncode == 0, done.stderr
    marks = log(meet)
    # The pre- and post-task have no host: once each, before and after the batches.
    assert marks == ["note Context", "host1 restart", "host2 restart", "note Context"]


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--report", "REPORT"], "--report works"),
        (["--gather"], "--gather works"),
        (["--max-fail", "1"], "--max-fail works"),
        (["--gather", "--report", "REPORT"], "--gather, --report work"),
    ],
)
def test_a_fleet_flag_in_a_run_that_is_not_parallel_is_one_line(
    sshd: SshServer, control_dir: Path, tmp_path: Path, meet: Path, flags: list[str], said: str
) -> None:
    (host,) = sshd.routes(1, prefix="web")
    report = tmp_path / "report.json"
    args = [str(report) if flag == "REPORT" else flag for flag in flags]
    folder = project(tmp_path, control_dir, meet)
    done = fab(folder, sshd.ssh_config, host, *args, "deploy", name="fabmux")
    # It would have run one host after another and done nothing with the flag.
    assert (done.returncode, done.stderr) == (
        1,
        f"fabric-mux: {said} only in a parallel run: add -P (or --serial)\n",
    )
    assert sshd.logins() == 0 and log(meet) == [] and not report.exists()
    # A parallel run from fabric.yaml, or the environment, reads it.
    parallel = project(tmp_path / "parallel", control_dir, meet, "  parallel: true\n")
    done = fab(parallel, sshd.ssh_config, host, *args, "deploy", name="fabmux")
    assert done.returncode == 0, done.stderr
    assert log(meet) == [f"{host} deploy"]
    assert report.exists() == ("REPORT" in flags)
