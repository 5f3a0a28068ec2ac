"""fabmux -P: each task on every host at once, output a whole line per host, a summary."""

from __future__ import annotations

import os
import subprocess
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from fabrun import fab, fab_argv, interrupted_when
from waiting import wait_until

from fabric_mux.group import MuxThreadingGroup
from fabric_mux.parallel import HostReport, summary
from fabric_mux.peers import process_argv, processes_with_argument
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

    @task
    def echoed(c):
        c.run("echo out; echo err >&2", echo=True)

    @task
    def read_stdin(c):
        c.run("read line; echo read $?")

    @task
    def busy(c):
        # Arrive, then run long enough for Ctrl-C to come; then one more command.
        c.run(f"touch {{MEET}}/{{c.original_host}}; sleep 30", warn=True)
        c.run(f"touch {{MEET}}/after-{{c.original_host}}")

    @task
    def busy_here(c):
        c.run(f"touch {{MEET}}/{{c.original_host}}")
        import time
        time.sleep(120)  # local work: Ctrl-C must not wait for it

    @task
    def spoof(c):
        # A line that, on a terminal, would look like another host's.
        c.run("printf 'ok\\r[other] pwned\\n\\033[2K\\033[1G[other] also\\n'")

    @task
    def garble(c):
        # A server's escape bytes in what a host's failure says.
        if c.original_host.endswith("1"):
            said = c.run("printf 'bad\\033[2J\\033[Hnews\\rX\\n' >&2; exit 3", warn=True, hide=True)
            raise RuntimeError(said.stderr)
        c.run("echo '" + chr(27) + "[2J'" + chr(13) + "; exit 4", hide=True)

    @task
    def long_line(c):
        # 64 MiB with no newline, then the end of the line.
        c.run("head -c 67108864 /dev/zero | tr '\\\\0' x; echo")

    @task
    def config_churn(c):
        # One host writes its config while the others read theirs.
        for n in range(1500):
            if c.original_host.endswith("1"):
                c.config.run.warn = bool(n % 2)
            else:
                c.config.run.echo
        c.run("true")
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
    folder: Path,
    ssh_config: Path,
    hosts: str,
    *args: str,
    name: str = "fabmux",
    stdin: int = subprocess.DEVNULL,
) -> subprocess.CompletedProcess[str]:
    return fab(folder, ssh_config, hosts, *args, name=name, stdin=stdin)


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


def test_no_host_can_print_over_its_prefix(
    sshd: SshServer, control_dir: Path, tmp_path: Path, meeting_point: Path
) -> None:
    folder = project(tmp_path, control_dir, meeting_point, 1)
    host = sshd.routes(1, prefix="web")[0]
    done = run(folder, sshd.ssh_config, host, "-P", "spoof")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"[{host}] ok\\r[other] pwned",
        f"[{host}] \\e[2K\\e[1G[other] also",
    ]
    assert "\x1b" not in done.stdout and "\r" not in done.stdout


def test_a_host_name_with_an_invisible_character_runs_nowhere(
    sshd: SshServer, control_dir: Path, tmp_path: Path, meeting_point: Path
) -> None:
    """A bidi override and a zero-width space, in the alias of a real server: a
    name that reads as another, refused in one line that shows them as text."""
    folder = project(tmp_path, control_dir, meeting_point, 1)
    (host,) = sshd.routes(1, prefix="web\u202e\u200b")
    done = run(folder, sshd.ssh_config, host, "-P", "echoed")
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        "fabric-mux: the host name 'web\\u202e\\u200b1' holds an invisible character: "
        "no host's name does\n"
    )
    assert sshd.logins() == 0


def test_a_long_line_with_no_newline_is_marked_once_in_one_piece(
    sshd: SshServer, control_dir: Path, tmp_path: Path, meeting_point: Path
) -> None:
    folder = project(tmp_path, control_dir, meeting_point, 1)
    host = sshd.routes(1, prefix="web")[0]
    # The bound only catches a run gone quadratic (minutes here); it takes seconds.
    done = run(folder, sshd.ssh_config, host, "-P", "long-line")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"[{host}] " + "x" * 67108864 + "\n"


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
    node2 = next(line for line in summary.splitlines() if line.strip().startswith("failed"))
    assert "node2 (1)  in fail-on-host2: UnexpectedExit: 'exit 3' exited with 3" in node2
    assert "then skipped after" in node2
    assert "  ok           node[1,3] (2)" in summary
    assert "1 of 3 hosts failed" in summary


def test_the_summary_shows_a_hosts_escape_bytes_as_text(
    sshd: SshServer, control_dir: Path, tmp_path: Path, meeting_point: Path
) -> None:
    node1, node2 = sshd.routes(2, prefix="node")
    folder = project(tmp_path, control_dir, meeting_point, 3)
    # A control character in a host name is refused before anything runs.
    done = run(folder, sshd.ssh_config, f"{node1},evil\x1bM\rX", "-P", "garble")
    assert (done.returncode, done.stderr) == (
        1,
        "fabric-mux: the host name 'evil\\x1bM\\rX' holds a control character ('\\x1b'): "
        "no host's name does\n",
    )
    assert sshd.logins() == 0
    done = run(folder, sshd.ssh_config, f"{node1},{node2}", "-P", "garble")
    assert done.returncode == 1
    assert "\x1b" not in done.stderr and "\r" not in done.stderr, repr(done.stderr)
    summary = done.stderr[done.stderr.index("fabric-mux: garble on 2 hosts") :].splitlines()
    lines = {line.split()[1]: line for line in summary[1:3]}  # a failure a line, its host second
    assert "in garble: RuntimeError: bad\\e[2J\\e[Hnews" in lines[node1]
    assert "in garble: UnexpectedExit: \"echo '\\x1b[2J'\\r; exit 4\" exited with 4" in lines[node2]
    assert summary[-2] == "2 of 2 hosts failed"


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


def test_echoed_commands_are_marked_with_their_host_too(
    sshd: SshServer, control_dir: Path, tmp_path: Path, meeting_point: Path
) -> None:
    hosts = sshd.routes(3, prefix="node")
    folder = project(tmp_path, control_dir, meeting_point, 3)
    done = run(folder, sshd.ssh_config, ",".join(hosts), "-P", "echoed")
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    assert len(out) == 6 and all(line.startswith("[node") for line in out)
    assert sum("echo out; echo err >&2" in line for line in out) == 3
    assert sorted(line for line in done.stderr.splitlines() if " err" in line) == [
        f"[{host}] err" for host in hosts
    ]


def test_a_command_reading_stdin_in_a_parallel_run_reads_its_end(
    sshd: SshServer, control_dir: Path, tmp_path: Path, meeting_point: Path
) -> None:
    hosts = sshd.routes(2, prefix="node")
    folder = project(tmp_path, control_dir, meeting_point, 2)
    # fab's own stdin stays open, as a terminal nobody types into: the hosts
    # cannot share it, so each command reads its end at once.
    quiet_end, held_end = os.pipe()
    try:
        done = run(folder, sshd.ssh_config, ",".join(hosts), "-P", "read-stdin", stdin=quiet_end)
    finally:
        os.close(quiet_end)
        os.close(held_end)
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.splitlines()) == ["[node1] read 1", "[node2] read 1"]


def test_each_host_has_a_config_of_its_own_in_a_parallel_run(
    sshd: SshServer, control_dir: Path, tmp_path: Path, meeting_point: Path
) -> None:
    hosts = sshd.routes(4, prefix="node")
    folder = project(tmp_path, control_dir, meeting_point, 4)
    done = run(folder, sshd.ssh_config, ",".join(hosts), "-P", "config-churn")
    assert done.returncode == 0, done.stderr
    assert "every host ok" in done.stderr


def test_a_parallel_run_without_mux_is_refused(
    sshd: SshServer, control_dir: Path, tmp_path: Path, meeting_point: Path
) -> None:
    folder = project(tmp_path, control_dir, meeting_point, 2)
    done = run(folder, sshd.ssh_config, sshd.alias, "--no-mux", "-P", "after")
    assert done.returncode == 1
    assert "-P (parallel) runs need mux" in done.stderr
    assert sshd.logins() == 0


def interrupt_when_all_arrive(
    folder: Path, ssh_config: Path, hosts: list[str], task: str, meet: Path
) -> subprocess.CompletedProcess[str]:
    """Run ``task`` with -P, and Ctrl-C it once every host has reached it."""
    argv = fab_argv(ssh_config, ",".join(hosts), "-P", task, name="fabmux")
    return interrupted_when(folder, argv, lambda: all((meet / host).exists() for host in hosts))


def test_ctrl_c_in_a_parallel_run_stops_every_host_before_its_next_command(
    sshd: SshServer, control_dir: Path, tmp_path: Path, meeting_point: Path
) -> None:
    hosts = sshd.routes(3, prefix="node")
    folder = project(tmp_path, control_dir, meeting_point, 3)
    done = interrupt_when_all_arrive(folder, sshd.ssh_config, hosts, "busy", meeting_point)
    assert done.returncode != 0
    assert "interrupted; commands may still be running on" in done.stderr
    assert not [path.name for path in meeting_point.glob("after-*")]


def test_ctrl_c_in_a_parallel_run_does_not_wait_for_local_work(
    sshd: SshServer, control_dir: Path, tmp_path: Path, meeting_point: Path
) -> None:
    hosts = sshd.routes(2, prefix="node")
    folder = project(tmp_path, control_dir, meeting_point, 2)
    done = interrupt_when_all_arrive(folder, sshd.ssh_config, hosts, "busy-here", meeting_point)
    assert done.returncode != 0  # and it ended well within the tasks' 120 s


def test_every_summary_line_is_shown_as_text() -> None:
    reports = {
        "web\x1b[2J": HostReport("web\x1b[2J", 1.0, "deploy", "Exit: half\rdone\x07"),
        "web2": HostReport("web2", 1.0),
    }
    said = summary(reports, ["deploy"])
    assert "\x1b" not in said and "\r" not in said and "\x07" not in said
    assert "failed       web\\e[2J (1)  in deploy: Exit: half\\rdone\\x07" in said


def ssh_with(ssh_config: Path) -> list[int]:
    """Our ssh masters (logging in) given ``ssh_config`` (not ``ssh -G`` asked of it)."""
    found = processes_with_argument(str(ssh_config), os.getuid())
    return [pid for pid in found if "-M" in (process_argv(pid) or [])]


@pytest.mark.parametrize("parallel", [True, False])
def test_ctrl_c_during_a_login_says_nothing_ran_and_leaves_no_ssh(
    sshd: SshServer, control_dir: Path, tmp_path: Path, meeting_point: Path, parallel: bool
) -> None:
    """A server that accepts the connection and answers nothing: Ctrl-C while the
    master logs in. No command started anywhere, and the run says so."""
    folder = project(tmp_path, control_dir, meeting_point, 1)
    flags = ["-P"] if parallel else []
    argv = fab_argv(sshd.ssh_config, sshd.alias, *flags, "meet", name="fabmux")
    sshd.freeze()
    try:
        done = interrupted_when(folder, argv, lambda: bool(ssh_with(sshd.ssh_config)))
        err = done.stderr
        assert done.returncode != 0
        assert "commands may still be running" not in err
        if parallel:
            assert (
                f"fabric-mux: interrupted while logging in to {sshd.alias}: nothing ran there"
                in err
            )
        else:
            assert err.endswith("fabric-mux: interrupted (Ctrl-C)\n"), err
        assert wait_until(lambda: not ssh_with(sshd.ssh_config))
    finally:
        sshd.thaw()
    assert sshd.logins() == 0
    assert list(meeting_point.iterdir()) == []
