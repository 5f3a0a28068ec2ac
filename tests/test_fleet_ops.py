"""Fleet operations against real servers: rolling runs stopped by their failure
budget, the failed-hosts file and reruns from it, gathered output, host ranges,
the JSON report. Logins and commands are counted on the servers."""

from __future__ import annotations

import fcntl
import json
import os
import pwd
import signal
import subprocess
import tempfile
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fabric
import pytest
from fabrun import fab, fab_argv, program, run_in, start_in
from waiting import wait_until

from fabric_mux import MuxConnection, MuxExecutor, warmup
from fabric_mux.executor import MuxConnectionCall
from fabric_mux.master import master_pids
from fabric_mux.process import current
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

    @task
    def hold(c):
        # Arrives, then waits while its flag is there (until the test's Ctrl-C,
        # or until the test takes the flag away).
        flag = f"{{MEET}}/hold-{{c.original_host}}"
        c.run(f"touch {{MEET}}/at-{{c.original_host}}")
        c.run(f"timeout 60 sh -c 'while [ -e {{flag}} ]; do sleep 0.05; done'")
        c.run(f"echo {{c.original_host}} hold >> {{MEET}}/log")
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


def project(
    tmp_path: Path, control_dir: Path, meet: Path, yaml: str = "", failed: Path | None = None
) -> Path:
    folder = tmp_path / "project"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "fabfile.py").write_text(FABFILE.format(meet=str(meet)))
    (folder / "fabric.yaml").write_text(
        "tasks:\n  executor_class: fabric_mux.MuxExecutor\n"
        f"mux:\n  control_dir: {control_dir}\n  failed_hosts: {failed or tmp_path / 'failed'}\n"
        f"{yaml}"
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


class HeldAhead:
    """The next batch's masters started ahead (``MuxExecutor._prefetch``), one host's
    held past its start slot, before its login, until :meth:`go`."""

    def __init__(self, fleet: Any, control_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.config = fleet.fabric_config({"mux": {"control_dir": str(control_dir)}})
        self.held_host, self.other = fleet.hosts
        self.entered, self._go = threading.Event(), threading.Event()
        opening = MuxConnection.open_along

        def held(connection: MuxConnection, *args: Any, **kwargs: Any) -> None:
            if connection.original_host == self.held_host:
                self.entered.set()
                assert self._go.wait(60)
            opening(connection, *args, **kwargs)

        monkeypatch.setattr(MuxConnection, "open_along", held)
        executor = MuxExecutor(collection=None, config=self.config)
        calls = [
            MuxConnectionCall(
                task=fabric.Task(lambda c: None),
                init_kwargs={"host": host},
                run_state=executor.run_state,
            )
            for host in fleet.hosts
        ]
        self.stop_started = executor._prefetch(calls)
        self.executor = executor

    def go(self) -> None:
        self._go.set()

    def up(self, host: str) -> bool:
        return bool(master_pids(master_path(host, self.config)))

    def close(self) -> None:
        self._go.set()
        for connection in self.executor.run_state.opened:
            connection.close()


def test_a_master_ahead_cannot_begin_its_login_while_the_run_stops_them(
    sshd_fleet: FleetFactory, control_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run stops (a spent budget, Ctrl-C) while a host of the next batch is past
    its start slot but not logging in yet: it never logs in."""
    fleet = sshd_fleet(2)
    ahead = HeldAhead(fleet, control_dir, monkeypatch)
    try:
        assert ahead.entered.wait(60)
        assert wait_until(lambda: ahead.up(ahead.other), deadline=60)
        assert wait_until(lambda: fleet.logins()[ahead.other] == 1, deadline=60)
        stopping = threading.Thread(target=ahead.stop_started)
        stopping.start()
        assert wait_until(lambda: current().starts.stopping, deadline=60)
        ahead.go()
        stopping.join(timeout=60)
        assert not stopping.is_alive()
    finally:
        ahead.close()
    assert fleet.logins() == {ahead.held_host: 0, ahead.other: 1}
    assert not ahead.up(ahead.held_host) and not ahead.up(ahead.other)


def test_a_master_ahead_that_comes_up_after_the_run_stopped_is_stopped(
    sshd_fleet: FleetFactory, control_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its thread outlived the wait for it (a slow ssh -G, a loaded machine): the
    master it brings up later is stopped as it comes, not left for its persist time."""
    monkeypatch.setattr(warmup, "UNWIND_SECONDS", 0.0)
    fleet = sshd_fleet(2)
    ahead = HeldAhead(fleet, control_dir, monkeypatch)
    try:
        assert ahead.entered.wait(60)
        ahead.stop_started()  # gives up on the held thread at once
        ahead.go()
        assert wait_until(lambda: fleet.logins()[ahead.held_host] == 1, deadline=60)
        assert wait_until(lambda: not ahead.up(ahead.held_host), deadline=60)
    finally:
        ahead.close()


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
    # Done: the list is gone, not left stale for a later -H @FILE.
    assert not failed.exists()
    assert f"fabric-mux: every host ok: removed an earlier run's failed-hosts list {failed}\n" in (
        again.stderr
    )


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
    done = run_in(folder, [program(name), *flags, "note", "note"])
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


def test_a_report_that_cannot_be_written_fails_the_run_in_its_own_words(
    sshd: SshServer, control_dir: Path, tmp_path: Path, meet: Path
) -> None:
    """Every host ok, but the report asked for is not there: CI would read none."""
    (host,) = sshd.routes(1, prefix="web")
    folder = project(tmp_path, control_dir, meet)
    report = tmp_path / "no-such-folder" / "report.json"
    done = fab(
        folder, sshd.ssh_config, host, "-P", "--report", str(report), "deploy", name="fabmux"
    )
    assert done.returncode == 1 and log(meet) == [f"{host} deploy"]
    said = f"fabric-mux: could not write the report {report}: No such file or directory\n"
    assert done.stderr.endswith(said), done.stderr
    assert not list(report.parent.parent.glob("**/.report.json.*"))


def test_a_report_that_would_replace_the_failed_hosts_file_runs_nothing(
    sshd: SshServer, control_dir: Path, tmp_path: Path, meet: Path
) -> None:
    (host,) = sshd.routes(1, prefix="web")
    folder = project(tmp_path, control_dir, meet)  # its failed-hosts file: tmp_path/failed
    args = ["-P", "--report", str(tmp_path / "failed"), "deploy"]
    done = fab(folder, sshd.ssh_config, host, *args, name="fabmux")
    assert (done.returncode, done.stderr) == (
        1,
        f"fabric-mux: mux.report (--report) names the failed-hosts file {tmp_path / 'failed'}: "
        "the report would take its place; give the report another path\n",
    )
    assert sshd.logins() == 0 and log(meet) == []


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


def start(folder: Path, ssh_config: Path, hosts: str, *args: str) -> subprocess.Popen[str]:
    """``fabmux`` in the background, in a session of its own, as from a terminal."""
    return start_in(folder, fab_argv(ssh_config, hosts, *args, name="fabmux"))


def ended(child: subprocess.Popen[str]) -> str:
    """Its stderr, once it has ended (a run that does not end fails the test)."""
    try:
        return child.communicate(timeout=60)[1]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def summary_statuses(stderr: str) -> dict[str, str]:
    """Each host's status as the summary says it (hosts folded one a line here)."""
    statuses = {}
    for line in stderr.splitlines():
        for status in ("ok", "failed", "interrupted", "stopped", "not started"):
            if line.startswith(f"  {status:<12} "):
                statuses[line[15:].split(" (", 1)[0]] = status
    return statuses


def test_ctrl_c_in_a_rolling_run_gives_each_host_one_status_everywhere(
    sshd: SshServer, control_dir: Path, tmp_path: Path, meet: Path
) -> None:
    r1, r2, r3 = sshd.routes(3, prefix="r")
    (meet / "hold-r2").touch()
    report = tmp_path / "report.json"
    folder = project(tmp_path, control_dir, meet)
    # One host at a time (-z 1): r2 arrives only once r1 has run the whole task.
    args = ["--serial", "2", "-z", "1", "--report", str(report), "hold", "restart"]
    child = start(folder, sshd.ssh_config, "r[1-3]", *args)
    config = sshd.fabric_config({"mux": {"control_dir": str(control_dir)}})
    try:
        # r2 at work, and r3's master started ahead for the next batch.
        assert wait_until((meet / "at-r2").exists, 60)
        assert wait_until(lambda: bool(master_pids(master_path(r3, config))), 60)
    finally:
        child.send_signal(signal.SIGINT)
    err = ended(child)
    assert child.returncode != 0
    expected = {r1: "stopped", r2: "interrupted", r3: "not started"}
    assert summary_statuses(err) == expected, err
    assert f"  interrupted  {r2} (1)  in hold (Ctrl-C)" in err
    assert f"  stopped      {r1} (1)  did not run restart" in err
    assert "the run was interrupted (Ctrl-C)" in err and "exited with -1" not in err
    # The failed-hosts file and the report say the same.
    assert listed(tmp_path / "failed") == [r1, r2, r3]
    assert f"{r2}  # interrupted in hold (Ctrl-C)" in (tmp_path / "failed").read_text()
    data = json.loads(report.read_text())
    assert {host["host"]: host["status"] for host in data["hosts"]} == expected
    interrupted = next(host for host in data["hosts"] if host["host"] == r2)
    assert interrupted["reason"] == "interrupted (Ctrl-C)" and interrupted["exit_code"] is None
    assert data["interrupted"] and data["stopped"] == "the run was interrupted (Ctrl-C)"
    assert data["counts"] == {
        "ok": 0, "failed": 0, "interrupted": 1, "stopped": 1, "not started": 1
    }  # fmt: skip
    # r3's master, started ahead, is stopped again: no command ever ran there.
    assert not master_pids(master_path(r3, config))
    assert log(meet) == [f"{r1} hold"]


def test_a_rollout_stopped_by_its_budget_ends_the_next_batchs_logins_under_way(
    sshd: SshServer, control_dir: Path, tmp_path: Path, meet: Path
) -> None:
    (r1,) = sshd.routes(1, prefix="r")
    (meet / f"fail-{r1}").touch()
    with sshd.ssh_config.open("a") as config:
        # A login that never ends (no ConnectTimeout: connect_timeout 0): a
        # ProxyCommand that hangs, as a password prompt nobody answers would.
        config.write(
            f"Host stuck\n    HostName 127.0.0.1\n    User {sshd.user}\n"
            f"    ProxyCommand sh -c 'touch {meet}/stuck; exec sleep 300'\n"
        )
    folder = project(tmp_path, control_dir, meet, "  connect_timeout: 0\n")
    child = start(folder, sshd.ssh_config, f"{r1},stuck", "--serial", "1", "deploy")
    err = ended(child)  # it ends: the stop does not wait for stuck's login
    assert child.returncode == 1, err
    assert (meet / "stuck").exists()  # its login had begun, ahead of its batch
    assert summary_statuses(err) == {r1: "failed", "stuck": "not started"}, err
    assert "the run stopped: 1 of 1 hosts started failed" in err
    assert wait_until(lambda: not processes_naming(f"{meet}/stuck"), 10)


def processes_naming(text: str) -> list[int]:
    """Processes whose command line holds ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if text.encode() in argv:
                found.append(int(entry.name))
    return found


def holds_open(pid: int, path: str) -> bool:
    """Whether process ``pid`` has ``path`` open."""
    folder = Path(f"/proc/{pid}/fd")
    try:
        return any(os.readlink(entry) == path for entry in folder.iterdir())
    except OSError:
        return False


def test_ctrl_c_while_a_host_waits_for_another_starts_lock_ends_the_wait(
    sshd: SshServer, control_dir: Path, tmp_path: Path, meet: Path
) -> None:
    (r1,) = sshd.routes(1, prefix="r")
    config = sshd.fabric_config({"mux": {"control_dir": str(control_dir)}})
    lock = Route.for_host(r1, config).master().lock_path()
    report = tmp_path / "report.json"
    folder = project(tmp_path, control_dir, meet)
    # Another process starting r1's master (at a password prompt, say) holds its lock.
    held = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(held, fcntl.LOCK_EX)
        child = start(folder, sshd.ssh_config, r1, "-P", "--report", str(report), "deploy")
        try:
            assert wait_until(lambda: holds_open(child.pid, lock), 60)  # waiting for it
        finally:
            child.send_signal(signal.SIGINT)
        err = ended(child)
    finally:
        os.close(held)
    assert child.returncode != 0
    assert summary_statuses(err) == {r1: "interrupted"}, err
    assert "every host ok" not in err
    # The wait ended at Ctrl-C: the run did not give up on it after a while.
    assert "some master starts did not end" not in err
    data = json.loads(report.read_text())
    assert data["counts"]["ok"] == 0 and data["hosts"][0]["status"] == "interrupted"
    assert sshd.logins() == 0 and log(meet) == []


def test_sigterm_ends_a_parallel_run_with_everything_written(
    sshd: SshServer, control_dir: Path, tmp_path: Path, meet: Path
) -> None:
    r1, r2 = sshd.routes(2, prefix="r")
    (meet / f"hold-{r2}").touch()
    report = tmp_path / "report.json"
    folder = project(tmp_path, control_dir, meet)
    # One host at a time (-z 1): r2 arrives only once r1 is done.
    args = ["-P", "-z", "1", "--report", str(report), "hold"]
    child = start(folder, sshd.ssh_config, "r[1-2]", *args)
    try:
        assert wait_until((meet / f"at-{r2}").exists, 60)
    finally:
        child.send_signal(signal.SIGTERM)  # a cancelled CI job, say
    err = ended(child)
    assert child.returncode == -signal.SIGTERM  # and then it dies of it
    assert summary_statuses(err) == {r1: "ok", r2: "interrupted"}, err
    assert "the run was interrupted (SIGTERM)" in err
    assert listed(tmp_path / "failed") == [r2]
    assert "# interrupted in hold (SIGTERM)" in (tmp_path / "failed").read_text()
    data = json.loads(report.read_text())
    assert [host["status"] for host in data["hosts"]] == ["ok", "interrupted"]
    assert data["hosts"][1]["reason"] == "interrupted (SIGTERM)"


def test_the_failed_hosts_list_is_written_only_in_a_folder_of_yours_alone(
    sshd: SshServer, control_dir: Path, tmp_path: Path, meet: Path, sshd_user: str
) -> None:
    (r1,) = sshd.routes(1, prefix="r")
    (meet / f"fail-{r1}").touch()
    shared = tmp_path / "shared"  # another user's, open to all: they could swap the list
    shared.mkdir()
    shared.chmod(0o777)
    if os.geteuid() == 0:
        os.chown(shared, pwd.getpwnam(sshd_user).pw_uid, -1)
    listing = shared / "failed-hosts"
    folder = project(tmp_path, control_dir, meet, failed=listing)
    done = fab(folder, sshd.ssh_config, r1, "-P", "deploy", name="fabmux")
    assert done.returncode == 1
    said = done.stderr.splitlines()[-1]
    assert said.startswith("fabric-mux: the failed hosts were not listed: "), done.stderr
    assert "so another user could swap it" in said
    assert not listing.exists()
    # What another user puts there is not read either.
    listing.write_text(f"{r1}\n")
    again = fab(folder, sshd.ssh_config, f"@{listing}", "-P", "deploy", name="fabmux")
    assert again.returncode == 1
    assert again.stderr.startswith(f"fabric-mux: the host list {listing} is not safe to read: ")
    assert len(again.stderr.splitlines()) == 1
    assert sshd.logins() == 1  # the first run's only


def test_the_last_run_to_end_writes_the_list_and_says_it_replaced_another(
    sshd: SshServer, control_dir: Path, tmp_path: Path, meet: Path
) -> None:
    (r1,) = sshd.routes(1, prefix="r")
    (meet / f"fail-{r1}").touch()
    (meet / f"hold-{r1}").touch()
    folder = project(tmp_path, control_dir, meet)
    failed = tmp_path / "failed"
    child = start(folder, sshd.ssh_config, r1, "-P", "hold", "deploy")
    try:
        assert wait_until((meet / f"at-{r1}").exists, 60)
        failed.write_text("other1  # failed in backup: ...\n")  # another run ended meanwhile
    finally:
        (meet / f"hold-{r1}").unlink()
    err = ended(child)
    assert child.returncode == 1, err
    assert listed(failed) == [r1]
    assert f"-H @{failed} (it replaces a list that another run wrote meanwhile)" in err
