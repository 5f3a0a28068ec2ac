"""Fleets: widths that follow the work, a host's task as soon as its own master is up,
no ``ssh -G`` on a warm run, a live progress line, an empty host list, Ctrl-C."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import tempfile
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fabrun import fab, fab_argv, interrupted_when, no_agent_env, program, run_in
from test_parallel import interrupt_when_all_arrive
from waiting import wait_until

from fabric_mux import MuxConnection
from fabric_mux.exceptions import EmptyHostList
from fabric_mux.process import MasterStarts
from fabric_mux.testing import SshServer
from fabric_mux.warmup import DOOR_STARTS, Starter

FABFILE = textwrap.dedent(
    """
    import os
    from fabric import task

    MEET = {meet!r}

    @task
    def mark(c):
        c.run(f"touch {{MEET}}/{{c.original_host}}")

    @task
    def here(c):
        # Where it runs: a host list with no host must not run it on this machine.
        with open(os.path.join(MEET, "ran-locally"), "w"):
            pass

    @task(hosts=["{host}", " "])
    def blank(c):
        c.run(f"touch {{MEET}}/{{c.original_host}}")

    @task(hosts=[])
    def nowhere(c):
        here(c)

    FLEET = []  # a fleet that came out empty

    @task(hosts=[name for name in FLEET])
    def fleet(c):
        here(c)

    @task(pre=[nowhere])
    def after_nowhere(c):
        here(c)
    """
)


@pytest.fixture
def meeting_point() -> Iterator[Path]:
    """A folder every account can write to: remote commands leave marks there."""
    folder = Path(tempfile.mkdtemp(prefix="fmq-", dir="/tmp"))
    folder.chmod(0o777)
    try:
        yield folder
    finally:
        subprocess.run(["rm", "-rf", str(folder)], check=False)


def project(
    tmp_path: Path, control_dir: Path, meet: Path, yaml: str = "", host: str = "fmux-test"
) -> Path:
    folder = tmp_path / "project"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "fabfile.py").write_text(FABFILE.format(meet=str(meet), host=host))
    (folder / "fabric.yaml").write_text(
        "tasks:\n  executor_class: fabric_mux.MuxExecutor\n"
        f"mux:\n  control_dir: {control_dir}\n{yaml}"
    )
    return folder


# -- an empty host list --------------------------------------------------------------


@pytest.mark.parametrize("parallel", [False, True])
def test_a_host_file_with_no_hosts_is_a_one_line_error_and_runs_nothing(
    sshd: SshServer, control_dir: Path, tmp_path: Path, meeting_point: Path, parallel: bool
) -> None:
    folder = project(tmp_path, control_dir, meeting_point)
    listing = tmp_path / "hosts.txt"
    listing.write_text("# nothing here yet\n\n   \n# web1\n")
    args = ["-P", "here"] if parallel else ["here"]
    done = fab(folder, sshd.ssh_config, f"@{listing}", *args, name="fabmux")
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"fabric-mux: no hosts in {listing} (only blank lines and comments): nothing to run on"
    )
    assert not (meeting_point / "ran-locally").exists()


#: Every way of writing -H with no host in it (an empty $HOSTS in a script).
NO_HOSTS = ["", ",", " , ", ",,"]


def test_an_h_that_names_no_host_is_a_one_line_error_and_runs_nothing(
    sshd: SshServer, control_dir: Path, tmp_path: Path, meeting_point: Path
) -> None:
    # fab through fabric.yaml (parallel there too) and fabmux, each with and without -P.
    plain = project(tmp_path / "plain", control_dir, meeting_point)
    parallel = project(tmp_path / "parallel", control_dir, meeting_point, "  parallel: true\n")
    runs = [
        ("fab", plain, []),
        ("fab", parallel, []),
        ("fabmux", plain, []),
        ("fabmux", plain, ["-P"]),
    ]
    command = ["--", "touch", str(meeting_point / "ran-remotely")]
    for hosts in NO_HOSTS:
        for name, folder, flags in runs:
            # Stock fab reads no project fabric.yaml for a bare command (no fabfile
            # loaded): its executor is Fabric's own there.
            for task in (["here"], command) if name == "fabmux" else (["here"],):
                done = fab(folder, sshd.ssh_config, hosts, *flags, *task, name=name)
                said = (name, hosts, flags, task, done.stderr)
                assert done.returncode == 1, said
                assert done.stderr == f"fabric-mux: -H {hosts!r} names no host: nothing to run on\n"
    assert list(meeting_point.iterdir()) == []  # neither here nor anywhere
    assert sshd.logins() == 0


#: Names that give only an account or a port, and the run's one line about them.
NO_HOST_NAMED = {
    "deploy@": "'deploy@' names no host",
    ":22": "':22' names no host",
    "web1,deploy@:22": "'deploy@:22' names no host",
    "@": "'@' names no file",
}


def test_a_name_with_only_an_account_or_a_port_is_a_one_line_error_and_runs_nothing(
    sshd: SshServer, control_dir: Path, tmp_path: Path, meeting_point: Path
) -> None:
    plain = project(tmp_path / "plain", control_dir, meeting_point)
    listing = tmp_path / "hosts.txt"
    listing.write_text(f"{sshd.alias}\ndeploy@\n")
    listing.chmod(0o600)
    for hosts, reason in [
        *NO_HOST_NAMED.items(),
        (f"@{listing}", f"'deploy@' in {listing} names no host"),
    ]:
        for flags in ([], ["-P"]):
            done = fab(plain, sshd.ssh_config, hosts, *flags, "here", name="fabmux")
            said = (hosts, flags, done.stderr)
            assert done.returncode == 1, said
            assert done.stderr.startswith("fabric-mux: ") and reason in done.stderr, said
            assert done.stderr.count("\n") == 1, said
    assert list(meeting_point.iterdir()) == []
    assert sshd.logins() == 0


@pytest.mark.parametrize("host", ["", " ", "deploy@", ":22", "deploy@:22"])
def test_a_connection_given_no_host_says_so_as_fabrics_type(host: str) -> None:
    with pytest.raises(EmptyHostList, match="names no host") as raised:
        MuxConnection(host)
    assert isinstance(raised.value, TypeError)  # what Fabric's Connection raises there


@pytest.mark.parametrize("parallel", [False, True])
def test_a_host_files_name_is_not_a_host_range(
    sshd: SshServer, control_dir: Path, tmp_path: Path, meeting_point: Path, parallel: bool
) -> None:
    mine, other = sshd.routes(2, prefix="f")
    (tmp_path / "hosts[2].txt").write_text(f"{mine}\n")
    (tmp_path / "hosts2.txt").write_text(f"{other}\n")  # what the range would name
    folder = project(tmp_path, control_dir, meeting_point)
    flags = ["-P"] if parallel else []
    listing = f"@{tmp_path / 'hosts[2].txt'}"
    done = fab(folder, sshd.ssh_config, listing, *flags, "mark", name="fabmux")
    assert done.returncode == 0, done.stderr
    assert [path.name for path in meeting_point.iterdir()] == [mine]


@pytest.mark.parametrize("parallel", [False, True])
def test_blank_names_beside_real_ones_are_dropped(
    sshd: SshServer, control_dir: Path, tmp_path: Path, meeting_point: Path, parallel: bool
) -> None:
    s1, s2 = sshd.routes(2, prefix="s")
    folder = project(tmp_path, control_dir, meeting_point)
    flags = ["-P"] if parallel else []
    done = fab(folder, sshd.ssh_config, f"{s1},, {s2},", *flags, "mark", name="fabmux")
    assert done.returncode == 0, done.stderr
    assert sorted(path.name for path in meeting_point.iterdir()) == sorted([s1, s2])


@pytest.mark.parametrize(("name", "flags"), [("fab", []), ("fabmux", []), ("fabmux", ["-P"])])
def test_a_blank_host_among_a_tasks_hosts_is_an_error(
    sshd: SshServer,
    control_dir: Path,
    tmp_path: Path,
    meeting_point: Path,
    name: str,
    flags: list[str],
) -> None:
    folder = project(tmp_path, control_dir, meeting_point, host=sshd.alias)
    done = run_in(folder, [program(name), "-S", str(sshd.ssh_config), *flags, "blank"])
    assert done.returncode == 1
    assert done.stderr == (
        f"fabric-mux: a blank host name among the task's hosts (['{sshd.alias}', ' ']): "
        "nothing to run on there\n"
    )
    assert list(meeting_point.iterdir()) == []
    assert sshd.logins() == 0


@pytest.mark.parametrize("task", ["nowhere", "fleet", "after-nowhere"])
@pytest.mark.parametrize(("name", "flags"), [("fab", []), ("fabmux", []), ("fabmux", ["-P"])])
def test_a_task_whose_hosts_list_is_empty_runs_nowhere(
    control_dir: Path,
    tmp_path: Path,
    meeting_point: Path,
    name: str,
    flags: list[str],
    task: str,
) -> None:
    folder = project(tmp_path, control_dir, meeting_point)
    done = run_in(folder, [program(name), *flags, task])
    assert done.returncode == 1
    # hosts=[] is not hosts=None (a task of this machine): it names no host.
    said = "nowhere" if task == "after-nowhere" else task
    assert done.stderr == (
        f"fabric-mux: the task {said!r} names no host (hosts=[]): nothing to run on\n"
    )
    assert list(meeting_point.iterdir()) == []


@pytest.mark.parametrize("flags", [[], ["-P"]])
def test_a_command_with_no_hosts_is_one_line(
    control_dir: Path, tmp_path: Path, meeting_point: Path, flags: list[str]
) -> None:
    folder = project(tmp_path, control_dir, meeting_point)
    done = run_in(folder, [program("fabmux"), *flags, "--", "touch", str(meeting_point / "ran")])
    assert done.returncode == 1
    assert done.stderr == (
        f"fabric-mux: a command to run (-- touch {meeting_point / 'ran'}) needs hosts: "
        "name them with -H\n"
    )
    assert list(meeting_point.iterdir()) == []


# -- each host's failure is its own --------------------------------------------------------


@pytest.mark.parametrize("width", [["-z", "1"], []])
def test_a_malformed_host_fails_alone_in_a_parallel_run(
    sshd: SshServer, control_dir: Path, tmp_path: Path, meeting_point: Path, width: list[str]
) -> None:
    s1, s2 = sshd.routes(2, prefix="s")
    folder = project(tmp_path, control_dir, meeting_point)
    for _ in range(3):
        hosts = f"{s1},k1:notaport,{s2}"
        done = fab(folder, sshd.ssh_config, hosts, "-P", *width, "mark", name="fabmux")
        assert done.returncode == 1
        summary = done.stderr[done.stderr.index("fabric-mux: mark on 3 hosts") :].splitlines()
        assert summary[1] == "  ok           s[1-2] (2)", done.stderr
        assert summary[2].startswith("  failed       k1:notaport (1)  in mark: ValueError: ")
        assert "invalid literal for int()" in summary[2]
        assert (meeting_point / s1).exists() and (meeting_point / s2).exists()


# -- a host's task starts when its own master is up ----------------------------------------

BRIDGE = textwrap.dedent(
    """
    # A ProxyCommand that waits for a file to exist before it connects: a host
    # whose login cannot finish before another host's task has run.
    import os, selectors, socket, sys, time
    flag, port = sys.argv[1], int(sys.argv[2])
    deadline = time.monotonic() + 30
    while not os.path.exists(flag):
        if time.monotonic() > deadline:
            sys.exit(1)
        time.sleep(0.02)
    server = socket.create_connection(("127.0.0.1", port))
    selector = selectors.DefaultSelector()
    selector.register(0, selectors.EVENT_READ)
    selector.register(server, selectors.EVENT_READ)
    while True:
        for key, _ in selector.select():
            if key.fileobj == 0:
                data = os.read(0, 65536)
                if not data:
                    server.shutdown(socket.SHUT_WR)
                    selector.unregister(0)
                    continue
                server.sendall(data)
            else:
                data = server.recv(65536)
                if not data:
                    sys.exit(0)
                os.write(1, data)
    """
)


def slow_host(sshd: SshServer, tmp_path: Path, name: str, flag: Path) -> str:
    """An alias of ``sshd`` whose login waits until ``flag`` exists."""
    bridge = tmp_path / "bridge.py"
    bridge.write_text(BRIDGE)
    key = sshd.known_hosts.read_text().splitlines()[0].split(None, 1)[1]
    with sshd.known_hosts.open("a") as known, sshd.ssh_config.open("a") as config:
        known.write(f"{name} {key}\n")
        config.write(
            f"Host {name}\n    HostName 127.0.0.1\n    HostKeyAlias {name}\n"
            f"    User {sshd.user}\n"
            f"    ProxyCommand {sys.executable} {bridge} {flag} {sshd.port}\n"
        )
    return name


def test_a_fast_hosts_task_runs_before_a_slow_hosts_master_is_up(
    sshd: SshServer, control_dir: Path, tmp_path: Path, meeting_point: Path
) -> None:
    # The slow host's login waits for the mark that the fast host's task makes:
    # a run that waits for every master before any task can only fail it.
    (fast,) = sshd.routes(1, prefix="fast")
    slow = slow_host(sshd, tmp_path, "slow", meeting_point / fast)
    folder = project(tmp_path, control_dir, meeting_point)
    done = fab(folder, sshd.ssh_config, f"{slow},{fast}", "-P", "mark", name="fabmux")
    assert done.returncode == 0, done.stderr
    assert (meeting_point / fast).exists() and (meeting_point / slow).exists()
    assert sshd.logins() == 2


# -- no ssh -G on a warm run ----------------------------------------------------------------


def counting_ssh(tmp_path: Path) -> tuple[Path, Path]:
    """An ``ssh`` that logs each of its argv to a file, then runs the real one."""
    log = tmp_path / "ssh-calls.log"
    wrapper = tmp_path / "ssh"
    real = subprocess.run(["which", "ssh"], capture_output=True, text=True, check=True)
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> {log}\nexec {real.stdout.strip()} "$@"\n')
    wrapper.chmod(0o755)
    return wrapper, log


def queries(log: Path) -> int:
    """``ssh -G`` runs logged so far."""
    if not log.exists():
        return 0
    return sum(1 for line in log.read_text().splitlines() if line.split()[:2] == ["-v", "-G"])


def test_a_warm_parallel_run_spawns_no_ssh_g(
    sshd: SshServer, control_dir: Path, tmp_path: Path, meeting_point: Path
) -> None:
    hosts = sshd.routes(4, prefix="w")
    wrapper, log = counting_ssh(tmp_path)
    folder = project(tmp_path, control_dir, meeting_point, f"  ssh_path: {wrapper}\n")
    done = fab(folder, sshd.ssh_config, ",".join(hosts), "-P", "mark", name="fabmux")
    assert done.returncode == 0, done.stderr
    cold = queries(log)
    assert cold >= len(hosts)
    for _ in range(2):
        done = fab(folder, sshd.ssh_config, ",".join(hosts), "-P", "mark", name="fabmux")
        assert done.returncode == 0, done.stderr
    assert queries(log) == cold
    assert sshd.logins() == len(hosts)
    kept = control_dir / "ssh-G"
    assert kept.is_dir() and kept.stat().st_mode & 0o777 == 0o700
    assert {path.stat().st_mode & 0o777 for path in kept.iterdir()} == {0o600}


def test_a_kept_ssh_g_answer_is_asked_again_once_ssh_config_changes(
    sshd: SshServer, control_dir: Path, tmp_path: Path, meeting_point: Path
) -> None:
    (host,) = sshd.routes(1, prefix="c")
    wrapper, log = counting_ssh(tmp_path)
    folder = project(tmp_path, control_dir, meeting_point, f"  ssh_path: {wrapper}\n")
    assert fab(folder, sshd.ssh_config, host, "-P", "mark", name="fabmux").returncode == 0
    before = queries(log)
    with sshd.ssh_config.open("a") as config:
        config.write("# touched\n")
    assert fab(folder, sshd.ssh_config, host, "-P", "mark", name="fabmux").returncode == 0
    assert queries(log) > before


def test_an_answer_that_ran_match_exec_is_never_kept(
    sshd: SshServer, control_dir: Path, tmp_path: Path, meeting_point: Path
) -> None:
    (host,) = sshd.routes(1, prefix="x")
    text = sshd.ssh_config.read_text()
    sshd.ssh_config.write_text(f"Match exec true\n    ServerAliveCountMax 4\n{text}")
    wrapper, log = counting_ssh(tmp_path)
    folder = project(tmp_path, control_dir, meeting_point, f"  ssh_path: {wrapper}\n")
    for _ in range(2):
        assert fab(folder, sshd.ssh_config, host, "-P", "mark", name="fabmux").returncode == 0
    assert queries(log) >= 2
    assert not list((control_dir / "ssh-G").glob("*.json"))


# -- the progress line ------------------------------------------------------------------


def test_the_progress_line_shows_on_a_terminal_only(
    sshd: SshServer, control_dir: Path, tmp_path: Path, meeting_point: Path
) -> None:
    hosts = sshd.routes(2, prefix="p")
    folder = project(tmp_path, control_dir, meeting_point)
    plain = fab(folder, sshd.ssh_config, ",".join(hosts), "-P", "mark", name="fabmux")
    assert plain.returncode == 0, plain.stderr
    assert "hosts done" not in plain.stderr
    parent, child = pty.openpty()
    try:
        proc = subprocess.Popen(
            fab_argv(sshd.ssh_config, ",".join(hosts), "-P", "mark", name="fabmux"),
            cwd=folder,
            env=no_agent_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=child,
            start_new_session=True,
        )
        os.close(child)
        seen = b""
        while True:  # to its end: the pty reports EIO once the run has closed it
            ready, _, _ = select.select([parent], [], [], 60)
            if not ready:
                break
            try:
                chunk = os.read(parent, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
        assert proc.wait(timeout=60) == 0
    finally:
        os.close(parent)
    text = seen.decode("utf-8", "replace")
    assert "mark: 2/2 hosts done, 0 failed, 0 running, " in text
    assert " s" in text.split("mark: 2/2 hosts done", 1)[1]


# -- Ctrl-C while masters start -----------------------------------------------------------


def test_one_ctrl_c_while_masters_start_ends_the_run_and_leaves_nothing(
    sshd: SshServer, control_dir: Path, tmp_path: Path, meeting_point: Path
) -> None:
    names = [f"stuck{n}" for n in range(1, 4)]
    with sshd.ssh_config.open("a") as config:
        for name in names:
            # A login that never gets its server's banner: it would wait for the
            # whole connect timeout (60 s here). No %n: 8.0 does not expand it
            # in a ProxyCommand.
            config.write(
                f"Host {name}\n    HostName 127.0.0.1\n    User {sshd.user}\n"
                f"    ProxyCommand sh -c 'touch {meeting_point}/{name}; sleep 300; :'\n"
            )
    folder = project(tmp_path, control_dir, meeting_point, "  connect_timeout: 60\n")
    # Ctrl-C once; it must end the run far sooner than the connect timeout.
    done = interrupt_when_all_arrive(folder, sshd.ssh_config, names, "mark", meeting_point)
    assert done.returncode != 0
    left = [path.name for path in control_dir.iterdir() if path.name != "ssh-G"]
    assert not [name for name in left if name.endswith(".lock") or not name.startswith("user-")]
    assert wait_until(lambda: not _processes_naming(str(meeting_point)), 10)
    assert "Traceback" not in done.stderr


def test_ctrl_c_while_a_master_logs_in_without_p_ends_its_proxycommand_too(
    sshd: SshServer, control_dir: Path, tmp_path: Path, meeting_point: Path
) -> None:
    """Without ``-P`` the login is the main thread's: Ctrl-C ends the half-made
    master's whole group, not its ssh alone (the ProxyCommand stayed, its parent init)."""
    with sshd.ssh_config.open("a") as config:
        config.write(
            f"Host stuck1\n    HostName 127.0.0.1\n    User {sshd.user}\n"
            f"    ProxyCommand sh -c 'touch {meeting_point}/stuck1; sleep 300; :'\n"
        )
    folder = project(tmp_path, control_dir, meeting_point, "  connect_timeout: 60\n")
    argv = fab_argv(sshd.ssh_config, "stuck1", "mark", name="fabmux")
    done = interrupted_when(folder, argv, (meeting_point / "stuck1").exists)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert wait_until(lambda: not _processes_naming(str(meeting_point)), 10)


def _processes_naming(text: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                argv = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if text.encode() in argv:
                found.append(int(entry))
    return found


# -- the starter's widths (decisions, with stand-ins for connections) ------------------------


class _StandIn:
    """A connection whose master is up (``warm``) or starts when the test lets it."""

    def __init__(self, door: Any, gate: threading.Event, tally: dict[str, int], warm: bool) -> None:
        self.original_host = str(door)
        self.gate = gate
        self.tally = tally
        self.warm = warm
        self.door = door
        self.lock = threading.Lock()

    def route(self) -> Any:
        return self

    def master(self) -> Any:
        return self

    def alive(self) -> int | None:
        return 1 if self.warm else None

    def open_along(self, route: Any, master: Any, found: int | None = None) -> None:
        assert route is self and master is self
        if self.warm:
            assert found == 1  # the pid found up is handed on, not asked again
            return
        with lock:
            self.tally["inside"] += 1
            self.tally["most"] = max(self.tally["most"], self.tally["inside"])
        self.gate.wait(30)
        with lock:
            self.tally["inside"] -= 1

    def remember_failure(self, error: BaseException | None) -> None:
        raise AssertionError(error)


lock = threading.Lock()


def _open_all(starter: Starter, doors: list[Any], inside: int, warm: bool = False) -> int:
    """Open a stand-in a door, each in a thread; let them finish once ``inside`` are
    starting at once; the most that ever were."""
    import fabric_mux.warmup as warmup

    tally = {"inside": 0, "most": 0}
    gate = threading.Event()
    stand_ins = [_StandIn(door, gate, tally, warm) for door in doors]
    original = warmup.front_door
    warmup.front_door = lambda route: route.door  # type: ignore[attr-defined]
    try:
        threads = [threading.Thread(target=starter.open, args=(s,), daemon=True) for s in stand_ins]
        for thread in threads:
            thread.start()
        assert wait_until(lambda: tally["inside"] == inside)
        gate.set()
        for thread in threads:
            thread.join(30)
        assert not any(thread.is_alive() for thread in threads)
    finally:
        warmup.front_door = original
    return tally["most"]


def test_starts_through_one_door_stay_below_sshds_max_startups() -> None:
    starter = Starter()
    assert _open_all(starter, ["bastion"] * (DOOR_STARTS * 3), DOOR_STARTS) == DOOR_STARTS
    assert starter.waited >= 1


def test_starts_through_many_doors_all_go_at_once() -> None:
    starter = Starter()
    assert _open_all(starter, [f"server{n}" for n in range(20)], 20) == 20
    assert starter.waited == 0
    assert starter.window == 32 + 20  # one more for each login that completed


def test_the_users_masters_at_once_wins() -> None:
    starter = Starter(3)
    assert _open_all(starter, [f"server{n}" for n in range(10)], 3) == 3
    assert starter.window == 3


def test_a_master_that_is_up_takes_no_start_slot() -> None:
    starter = Starter(1)
    assert _open_all(starter, [f"server{n}" for n in range(10)], 0, warm=True) == 0
    assert starter.waited == 0


def test_a_cancelled_start_is_not_wanted_even_if_it_finished() -> None:
    starts = MasterStarts()
    proc = subprocess.Popen(["true"], start_new_session=True)
    starts.begin(proc)
    proc.wait()
    starts.cancel()
    assert starts.end(proc) is False  # the master it made is stopped by its caller
    starts.resume()
    again = subprocess.Popen(["true"], start_new_session=True)
    starts.begin(again)
    again.wait()
    assert starts.end(again) is True


# -- a host's own config -------------------------------------------------------------------


def test_a_hosts_config_is_a_clone_that_shares_the_parsed_ssh_config(tmp_path: Path) -> None:
    from fabric_mux.config import MuxConfig
    from fabric_mux.upstream import host_config

    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text("".join(f"Host h{n}\n    Port {2000 + n}\n" for n in range(50)))
    config = MuxConfig(runtime_ssh_path=str(ssh_config), overrides={"mux": {"persist": 5}})
    config.load_ssh_config()
    blocks = len(config.base_ssh_config._config)
    copies = [host_config(config) for _ in range(20)]
    # Fabric's own clone parses the files into the original again each time.
    assert len(config.base_ssh_config._config) == blocks
    for copy in copies:
        assert copy.base_ssh_config is config.base_ssh_config
        assert copy.base_ssh_config.lookup("h7")["port"] == "2007"
        assert dict(copy) == dict(config.clone())
    copies[0].run.warn = True  # a task changes its host's config only
    assert copies[1].run.warn is False and config.run.warn is False
