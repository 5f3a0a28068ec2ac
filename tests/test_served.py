"""What a master at a shared path connects to, read as its own ssh reads it: the
order of its command line's words, its working folder, when it started, its way
there and its host-key rules. Each case is a config a user has, against real
servers; the task must land where its host says, as the account it says."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import fabric
import pytest
from fabrun import MUX_YAML, fab
from test_shared_paths import (  # noqa: F401
    FABFILE,
    GATED_RELAY,
    one_address,
    ports,
    ran_on,
    sockets,
)
from test_user_masters import prepend, run_ssh
from waiting import wait_until

from fabric_mux import MuxConnection
from fabric_mux.argv import is_control_socket_name
from fabric_mux.exceptions import EnvNotSent, RunInterrupted
from fabric_mux.master import master_pids
from fabric_mux.process import MasterStarts
from fabric_mux.pytest_plugin import FleetFactory
from fabric_mux.served import ssh_command_words
from fabric_mux.testing import Fleet


def landed(c: MuxConnection) -> tuple[str, int]:
    """As whom, and on which server's port, a command of ``c`` runs."""
    said = c.run('echo "$(id -un) $SSH_CONNECTION"', hide=True).stdout.split()
    return said[0], int(said[4])


def config(fleet: Fleet, control_dir: Path) -> fabric.Config:
    return fleet.fabric_config({"mux": {"control_dir": str(control_dir)}})


# -- the command line read as ssh reads it ---------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["ssh", "-fN", "web"], ("-f", "-N", "web")),
        (["ssh", "root@web", "-l", "bob", "uptime"], ("root@web", "-l", "bob")),
        (["ssh", "-p2", "-oUser=x", "--", "web", "ls"], ("-p", "2", "-o", "User=x", "--", "web")),
        (["ssh", "-E", "log", "-O", "check", "-F", "cfg", "w"], ("-F", "/here/cfg", "w")),
        (["/usr/bin/ssh", "-GV", "-Z", "web"], ("-Z", "web")),
        (["ssh", "-F", "cfg"], None),
        (["sshd", "-D"], None),
        (["python3", "x.py"], None),
        (["ssh", "-%", "web"], None),
    ],
)
def test_a_command_line_keeps_its_order_and_its_folder(
    argv: list[str], words: tuple[str, ...] | None
) -> None:
    assert ssh_command_words(argv, "/here") == words
    if words and any(word.startswith("/here") for word in words):
        assert ssh_command_words(argv, None) is None  # a relative -F with no known folder


# -- first value wins -----------------------------------------------------------------------


def test_the_first_user_and_port_of_a_masters_command_line_are_the_ones_it_used(
    one_address: Fleet,  # noqa: F811
    control_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``ssh root@host1 -l fmuxtest``: ssh logs in as root (the destination's user
    comes first). Read in another order, it would look like the user's own."""
    user = one_address.servers[0].user
    run_ssh(["ssh", "-F", str(one_address.ssh_config), "-fN", "root@host1", "-l", user])
    c = MuxConnection("host1", config=config(one_address, control_dir))
    assert landed(c) == (user, ports(one_address)["host1"])
    assert c.control_path is not None and c.control_path.startswith(str(control_dir))
    assert "connects to root@127.0.0.1" in caplog.text


def test_a_relative_config_file_is_the_one_in_the_masters_folder(
    sshd_fleet: FleetFactory,
    sockets: Path,  # noqa: F811
    control_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fleet = sshd_fleet(2)
    common = fleet.ssh_config.read_text().split("Host *", 1)[1]
    for name, server in (("a", fleet.servers[0]), ("b", fleet.servers[1])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "ssh_config").write_text(
            f"Host web\n    HostName 127.0.0.1\n    Port {server.port}\n    User {server.user}\n"
            f"    ControlMaster auto\n    ControlPath {sockets}/cm-%h\n"
            f"Host *{common}"
        )
    subprocess.run(
        ["ssh", "-F", "ssh_config", "-fN", "web"],
        cwd=tmp_path / "a",
        check=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=60,
    )
    # fab -S ssh_config, run from b: b's file, not a's, though the words are the same.
    monkeypatch.chdir(tmp_path / "b")
    settings = fabric.Config(
        runtime_ssh_path="ssh_config", overrides={"mux": {"control_dir": str(control_dir)}}
    )
    assert landed(MuxConnection("web", config=settings))[1] == fleet.servers[1].port
    assert fleet.logins() == {"host1": 1, "host2": 1}


def test_a_config_edited_after_the_master_started_makes_it_unknown(
    one_address: Fleet,  # noqa: F811
    control_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    run_ssh(["ssh", "-F", str(one_address.ssh_config), "-fN", "host1"])
    # host1 moved to the other server's port, later in the day (its file's time says so).
    text = one_address.ssh_config.read_text()
    moved = text.replace(
        f"Port {ports(one_address)['host1']}\n", f"Port {ports(one_address)['host2']}\n", 1
    )
    one_address.ssh_config.write_text(moved)
    later = time.time() + 60
    os.utime(one_address.ssh_config, (later, later))
    c = MuxConnection("host1", config=config(one_address, control_dir))
    assert landed(c)[1] == ports(one_address)["host2"]
    assert "its ssh_config changed since it started" in caplog.text


def test_a_master_whose_config_runs_match_exec_cannot_be_told(
    one_address: Fleet,  # noqa: F811
    control_dir: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``Match exec`` chose host2's port for the master started with FMUX_SITE=prod;
    asked now, without it, host1 is the other server. What the command answered
    then is not known: the master is not ridden."""
    prepend(
        one_address.ssh_config,
        f'Match originalhost host1 exec "test x$FMUX_SITE = xprod"\n'
        f"    Port {ports(one_address)['host2']}\n",
    )
    monkeypatch.setenv("FMUX_SITE", "prod")
    run_ssh(["ssh", "-F", str(one_address.ssh_config), "-fN", "host1"])
    assert one_address.logins() == {"host1": 0, "host2": 1}
    monkeypatch.delenv("FMUX_SITE")
    c = MuxConnection("host1", config=config(one_address, control_dir))
    assert landed(c)[1] == ports(one_address)["host1"]
    assert "runs a command (Match exec)" in caplog.text


@pytest.mark.parametrize("forwarding", [False, True], ids=["alone", "with-a-forward-to-host1"])
def test_a_persisting_master_that_went_through_a_proxy_of_its_own_is_not_the_direct_routes(
    sshd_fleet: FleetFactory,
    sockets: Path,  # noqa: F811
    control_dir: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    forwarding: bool,
) -> None:
    """``ssh -o ProxyCommand=... host1`` under ``ControlPersist``: its master's
    title says only its path (``cm-%C``, which names no ProxyCommand), and that
    path is the direct route's. It reached host2's server: the direct route does
    not ride it, seeing that its transport is no connection to host1's. Not even
    when a remote forward (``-R``) has it hold a connection to host1's port."""
    fleet = sshd_fleet(2)
    relay = tmp_path / "relay.py"
    relay.write_text(GATED_RELAY)
    prepend(
        fleet.ssh_config,
        f"Host *\n    ControlMaster auto\n    ControlPath {sockets}/cm-%C\n    ControlPersist 60\n",
    )
    here, there = fleet.servers[0].port, fleet.servers[1].port
    forward = []
    if forwarding:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            listen_at = probe.getsockname()[1]
        forward = ["-R", f"127.0.0.1:{listen_at}:127.0.0.1:{here}"]
    run_ssh(
        [
            "ssh",
            "-F",
            str(fleet.ssh_config),
            "-o",
            f"HostKeyAlias=[127.0.0.1]:{there}",
            "-o",
            f"ProxyCommand={sys.executable} {relay} 127.0.0.1 {there} {tmp_path}",
            *forward,
            "host1",
            "true",
        ]
    )
    assert fleet.logins() == {"host1": 0, "host2": 1}
    with contextlib.ExitStack() as held:
        if forwarding:
            # Something on host2's side uses the forward: the master connects to host1's port.
            held.enter_context(socket.create_connection(("127.0.0.1", listen_at)))
            assert wait_until(lambda: fleet.logins()["host1"] == 0 and held_to(here))
        c = MuxConnection("host1", config=config(fleet, control_dir))
        assert landed(c)[1] == here
    assert fleet.logins()["host1"] == 1
    assert "is not connected to 127.0.0.1 port" in caplog.text


def held_to(port: int) -> bool:
    """Whether any process holds an established connection to 127.0.0.1:``port``
    other than the server's own ends."""
    with open("/proc/net/tcp") as table:
        return any(
            line.split()[2] == f"0100007F:{port:04X}" and line.split()[3] == "01"
            for line in table.readlines()[1:]
        )


def test_a_persisting_master_that_connected_directly_is_ridden(
    sshd_fleet: FleetFactory,
    sockets: Path,  # noqa: F811
    control_dir: Path,
) -> None:
    fleet = sshd_fleet(1)
    prepend(
        fleet.ssh_config,
        f"Host *\n    ControlMaster auto\n    ControlPath {sockets}/cm-%C\n    ControlPersist 60\n",
    )
    run_ssh(["ssh", "-F", str(fleet.ssh_config), "host1", "true"])
    c = MuxConnection("host1", config=config(fleet, control_dir))
    assert landed(c)[1] == fleet.servers[0].port
    assert c.control_path is not None and c.control_path.startswith(f"{sockets}/cm-")
    assert fleet.logins() == {"host1": 1}


# -- host-key rules --------------------------------------------------------------------------


def test_a_master_that_checks_no_host_key_is_not_ridden_by_a_route_that_does(
    one_address: Fleet,  # noqa: F811
    control_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    lax = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
    run_ssh(["ssh", "-F", str(one_address.ssh_config), "-fN", *lax, "host1"])
    c = MuxConnection("host1", config=config(one_address, control_dir))
    c.run("true")
    assert c.control_path is not None and c.control_path.startswith(str(control_dir))
    assert "checks its server's host key by other rules" in caplog.text
    assert one_address.logins()["host1"] == 2


# -- the way there ---------------------------------------------------------------------------


def test_two_proxycommands_to_one_address_are_two_routes_whatever_the_path_names(
    sshd_fleet: FleetFactory,
    sockets: Path,  # noqa: F811
    control_dir: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``prod-db`` and ``stage-db``: one HostName, Port and User, each through its own
    ProxyCommand to another site. ``%C`` (with ``%j`` from 9.6) does not tell them
    apart: no token names a ProxyCommand."""
    fleet = sshd_fleet(2)
    relay = tmp_path / "relay.py"
    relay.write_text(GATED_RELAY)
    blocks = ""
    for name, server in (("prod-db", fleet.servers[0]), ("stage-db", fleet.servers[1])):
        blocks += (
            f"Host {name}\n    HostName db.internal\n    Port 22\n    User {server.user}\n"
            f"    HostKeyAlias [127.0.0.1]:{server.port}\n"
            f"    ProxyCommand {sys.executable} {relay} 127.0.0.1 {server.port} {tmp_path}\n"
        )
    prepend(
        fleet.ssh_config,
        f"{blocks}Host *\n    ControlMaster auto\n    ControlPath {sockets}/cm-%C\n"
        "    ControlPersist 60\n",
    )
    run_ssh(["ssh", "-F", str(fleet.ssh_config), "prod-db", "true"])
    c = MuxConnection("stage-db", config=config(fleet, control_dir))
    assert landed(c)[1] == fleet.servers[1].port  # stage's server, through stage's way
    assert fleet.logins() == {"host1": 1, "host2": 1}
    said = [line for line in caplog.text.splitlines() if "using a master" in line]
    assert said and str(relay) not in said[0]  # a ProxyCommand's words are not shown


def one_name_for_two_servers(fleet: Fleet, tmp_path: Path, port_words: str) -> None:
    """``px``: one name whose ProxyCommand reaches the server at ``port_words``, words
    that its shell expands (``$PXPORT``, ``$(cat FILE)``), as ``ssh -W %h:%p $BASTION``
    does where staging and production share host names. Either server's key is
    ``px``'s, so that only where the task runs tells which it reached."""
    relay = tmp_path / "relay.py"
    relay.write_text(GATED_RELAY)
    known = tmp_path / "px_known_hosts"
    known.write_text(
        "".join(
            "px-key " + " ".join(server.known_hosts.read_text().split()[1:3]) + "\n"
            for server in fleet.servers
        )
    )
    prepend(
        fleet.ssh_config,
        f"Host px\n    HostName db.internal\n    User {fleet.servers[0].user}\n"
        f"    HostKeyAlias px-key\n    UserKnownHostsFile {known}\n"
        f"    ProxyCommand {sys.executable} {relay} 127.0.0.1 {port_words} {tmp_path}\n",
    )
    (tmp_path / "fabfile.py").write_text(FABFILE)


@pytest.mark.parametrize("words", ["environment", "command"])
def test_a_proxycommand_whose_shell_picks_the_server_takes_each_run_where_it_says(
    sshd_fleet: FleetFactory,
    control_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    words: str,
) -> None:
    """The same ssh -G answer, another server: ``$PXPORT`` counts as the variable's
    value; a command's output (``$(cat FILE)``), which nobody can know ahead, makes
    the master the run's own (one warning line), ended with it."""
    fleet = sshd_fleet(2)
    choice = tmp_path / "px-port"
    port_words = "$PXPORT" if words == "environment" else f"$(cat {choice})"
    one_name_for_two_servers(fleet, tmp_path, port_words)
    (tmp_path / "fabric.yaml").write_text(MUX_YAML.format(control_dir=control_dir))
    for server in fleet.servers:
        monkeypatch.setenv("PXPORT", str(server.port))
        choice.write_text(str(server.port))
        proc = fab(tmp_path, fleet.ssh_config, "px", "-P", "where", name="fabmux")
        assert proc.returncode == 0, proc.stderr
        assert ran_on(proc.stdout) == {"px": server.port}
        said = [line for line in proc.stderr.splitlines() if "serves this run only" in line]
        assert len(said) == (words == "command"), proc.stderr
    assert fleet.logins() == {"host1": 1, "host2": 1}
    if words == "command":  # it lived while the run held it
        assert wait_until(
            lambda: not [p for p in control_dir.iterdir() if is_control_socket_name(p.name)]
        )


def test_a_users_master_whose_proxycommand_read_its_environment_is_not_ridden(
    sshd_fleet: FleetFactory,
    sockets: Path,  # noqa: F811
    control_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The user's ``ssh -fN px`` went where ``$PXPORT`` said in their terminal; in
    this process it says the other server. That master cannot be told to be this
    route's: a master of fabric-mux's own goes where this environment says."""
    fleet = sshd_fleet(2)
    one_name_for_two_servers(fleet, tmp_path, "$PXPORT")
    prepend(
        fleet.ssh_config,
        f"Host px\n    ControlMaster auto\n    ControlPath {sockets}/cm-%h\n",
    )
    first, second = fleet.servers
    run_ssh(
        ["ssh", "-F", str(fleet.ssh_config), "-fN", "px"], {**os.environ, "PXPORT": str(first.port)}
    )
    assert fleet.logins() == {"host1": 1, "host2": 0}
    monkeypatch.setenv("PXPORT", str(second.port))
    c = MuxConnection("px", config=config(fleet, control_dir))
    assert landed(c)[1] == second.port
    assert fleet.logins() == {"host1": 1, "host2": 1}
    c.close()


def test_the_same_bastion_alias_in_two_config_files_is_two_ways(
    sshd_fleet: FleetFactory,
    sockets: Path,  # noqa: F811
    control_dir: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """a.conf and b.conf both say ``Host db: ProxyJump bastion``, and each file's
    ``bastion`` is another server: the jump host is resolved in the master's own file."""
    fleet = sshd_fleet(3)
    target, site_a, site_b = fleet.servers
    common = fleet.ssh_config.read_text().split("Host *", 1)[1]
    files = {}
    for name, jump in (("a", site_a), ("b", site_b)):
        files[name] = tmp_path / f"{name}.conf"
        files[name].write_text(
            f"Host db\n    HostName 127.0.0.1\n    Port {target.port}\n    User {target.user}\n"
            f"    ProxyJump bastion\n"
            f"Host bastion\n    HostName 127.0.0.1\n    Port {jump.port}\n    User {jump.user}\n"
            f"Host *\n    ControlMaster auto\n    ControlPath {sockets}/cm-%h-%p-%r\n"
            f"    ControlPersist 60\n{common}"
        )
    run_ssh(["ssh", "-F", str(files["a"]), "-fN", "db"])
    assert fleet.logins() == {"host1": 1, "host2": 1, "host3": 0}
    b = MuxConnection(
        "db",
        config=fabric.Config(
            runtime_ssh_path=str(files["b"]), overrides={"mux": {"control_dir": str(control_dir)}}
        ),
    )
    b.run("true")
    # Through b's bastion: a login there, and one more at the target.
    assert fleet.logins() == {"host1": 2, "host2": 1, "host3": 1}
    assert "connects to" in caplog.text and "via" in caplog.text


# -- environment --------------------------------------------------------------------------------


def test_env_for_a_master_whose_command_line_is_gone_is_refused(
    one_address: Fleet,  # noqa: F811
    sockets: Path,  # noqa: F811
    control_dir: Path,
) -> None:
    """Ridden where its path names the route (``%C``), but its SendEnv cannot be
    read: variables sent as a session's own would be dropped without a word."""
    prepend(one_address.ssh_config, f"Host host1\n    ControlPath {sockets}/cm-%C\n")
    run_ssh(["ssh", "-F", str(one_address.ssh_config), "host1", "true"])
    c = MuxConnection("host1", config=config(one_address, control_dir), inline_ssh_env=False)
    c.run("true")
    assert c.control_path is not None and c.control_path.startswith(f"{sockets}/cm-")
    with pytest.raises(EnvNotSent, match="cannot be told"):
        c.run("echo $FMUX_A", env={"FMUX_A": "1"}, hide=True)
    assert one_address.logins()["host1"] == 1


# -- starts that race ------------------------------------------------------------------------


def test_ctrl_c_as_a_start_that_lost_the_path_ends_leaves_the_users_master_alone(
    sshd_fleet: FleetFactory,
    sockets: Path,  # noqa: F811
    control_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fleet = sshd_fleet(1)
    server = fleet.servers[0]
    (tmp_path / "relay.py").write_text(GATED_RELAY)
    prepend(
        fleet.ssh_config,
        f"Host slow\n    HostName 127.0.0.1\n    Port {server.port}\n"
        f"    ProxyCommand {sys.executable} {tmp_path / 'relay.py'} %h %p {tmp_path}\n"
        f"    ControlMaster auto\n    ControlPath {sockets}/cm-%C\n    ControlPersist 60\n",
    )
    c = MuxConnection("slow", config=config(fleet, control_dir))
    (tmp_path / "hold").touch()
    # Ctrl-C lands as the login ends: the start is no longer wanted.
    monkeypatch.setattr(MasterStarts, "end", lambda self, proc: False)
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            c.run("true")
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    try:
        assert wait_until((tmp_path / "waiting").exists, 30)
        (tmp_path / "hold").unlink()
        run_ssh(["ssh", "-F", str(fleet.ssh_config), "-fN", "-o", "ControlMaster=yes", "slow"])
    finally:
        (tmp_path / "go").touch()
        worker.join(60)
    assert [type(exc) for exc in outcome] == [RunInterrupted]
    path = next(sockets.iterdir())
    done = subprocess.run(
        ["ssh", "-S", str(path), "-O", "check", "x"], capture_output=True, check=False
    )
    assert done.returncode == 0  # the user's master is still up
    assert wait_until(lambda: not master_pids(str(path)), 30)  # ours is not


WAITING_CLIENT = textwrap.dedent(
    """
    import logging, sys
    import fabric
    from fabric_mux import MuxConnection
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    mux = {"mux": {"control_dir": sys.argv[2]}}
    config = fabric.Config(runtime_ssh_path=sys.argv[1], overrides=mux)
    c = MuxConnection(sys.argv[3], config=config)
    print(c.run("echo hi", hide=True).stdout, end="")
    print(c.control_path, file=sys.stderr)
    """
)


def test_two_control_folders_start_at_one_user_path_one_at_a_time(
    sshd_fleet: FleetFactory,
    sockets: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    """cron's control folder and a terminal's differ: their starts at the user's
    path still take turns, and the second rides the first's master."""
    fleet = sshd_fleet(1)
    server = fleet.servers[0]
    (tmp_path / "relay.py").write_text(GATED_RELAY)
    prepend(
        fleet.ssh_config,
        f"Host slow\n    HostName 127.0.0.1\n    Port {server.port}\n"
        f"    ProxyCommand {sys.executable} {tmp_path / 'relay.py'} %h %p {tmp_path}\n"
        f"    ControlMaster auto\n    ControlPath {sockets}/cm-%C\n    ControlPersist 60\n",
    )
    (tmp_path / "hold").touch()
    clients = []
    for name in ("cron", "terminal"):
        folder = tmp_path / name
        clients.append(
            subprocess.Popen(
                [sys.executable, "-c", WAITING_CLIENT, str(fleet.ssh_config), str(folder), "slow"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
        if name == "cron":
            assert wait_until((tmp_path / "waiting").exists, 30)
    second = clients[1]
    assert second.stderr is not None
    said = second.stderr.readline()  # it waits for the first, or (before) starts its own
    (tmp_path / "go").touch()
    outputs = [client.communicate(timeout=60)[0] for client in clients]
    assert outputs == ["hi\n", "hi\n"]
    assert "waiting for process" in said
    assert server.logins() == 1


# -- bastions ------------------------------------------------------------------------------


def test_aliases_and_timeouts_behind_a_bastion_share_one_master(
    sshd_fleet: FleetFactory, control_dir: Path
) -> None:
    fleet = sshd_fleet(1, bastion=True)
    fleet.ssh_config.write_text(
        fleet.ssh_config.read_text().replace("Host host1\n", "Host host1 host1b\n", 1)
    )
    settings = config(fleet, control_dir)
    paths = set()
    for c in (
        MuxConnection("host1", config=settings),
        MuxConnection("host1b", config=settings),
        MuxConnection("host1", connect_timeout=7, config=settings),
    ):
        c.run("true")
        paths.add(c.control_path)
    assert len(paths) == 1
    assert fleet.logins() == {"host1": 1, "bastion": 1}


def test_a_master_started_at_the_users_path_through_a_bastion_is_ridden_from_another_folder(
    sshd_fleet: FleetFactory,
    sockets: Path,  # noqa: F811
    control_dir: Path,
    tmp_path: Path,
) -> None:
    fleet = sshd_fleet(1, bastion=True)
    prepend(
        fleet.ssh_config,
        f"Host *\n    ControlMaster auto\n    ControlPath {sockets}/cm-%C\n    ControlPersist 60\n",
    )
    first = MuxConnection("host1", config=config(fleet, control_dir))
    first.run("true")
    # Another process, with another control folder: it knows the master only by
    # its command line, whose ProxyCommand logs into the first folder.
    elsewhere = tmp_path / "elsewhere"
    argv = [sys.executable, "-c", WAITING_CLIENT, str(fleet.ssh_config), str(elsewhere), "host1"]
    done = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60)
    assert done.stdout == "hi\n"
    assert done.stderr.splitlines()[-1] == first.control_path
    assert fleet.logins()["host1"] == 1
