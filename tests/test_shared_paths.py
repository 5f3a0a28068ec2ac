"""A control path that several routes can name holds a master of one of them, and
that master serves only its own route: no task lands on another host's server.

The fleets here are two servers of one address (127.0.0.1, other ports), under
the user's ``ControlMaster auto`` with a ControlPath that does not name the port
(``cm-%h``), or one ``--mux-control-path`` for two hosts. OpenSSH alone would
run the second host's command on the first one's server.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fabrun import MUX_YAML, fab
from test_user_masters import master_at, prepend, run_ssh
from waiting import wait_until

from fabric_mux import MuxConnection
from fabric_mux.master import master_pids
from fabric_mux.pytest_plugin import FleetFactory
from fabric_mux.testing import Fleet

#: Prints the port of the server the command runs on, as that server sees it.
FABFILE = (
    "from fabric import task\n\n"
    "@task\n"
    "def where(c):\n"
    '    c.run(\'echo "ran-on $(echo $SSH_CONNECTION | cut -d" " -f4)"\')\n'
)


@pytest.fixture
def sockets() -> Iterator[Path]:
    """The user's own folder of control sockets."""
    folder = Path(tempfile.mkdtemp(prefix="fms-", dir="/tmp"))
    try:
        yield folder
    finally:
        for path in folder.iterdir():
            subprocess.run(
                ["ssh", "-S", str(path), "-O", "exit", "x"], check=False, capture_output=True
            )
        subprocess.run(["rm", "-rf", str(folder)], check=False)


@pytest.fixture
def one_address(sshd_fleet: FleetFactory, sockets: Path) -> Fleet:
    """host1 and host2, both 127.0.0.1, under ``ControlMaster auto`` at ``cm-%h``."""
    fleet = sshd_fleet(2)
    prepend(
        fleet.ssh_config,
        f"Host *\n    ControlMaster auto\n    ControlPath {sockets}/cm-%h\n    ControlPersist 60\n",
    )
    return fleet


def ports(fleet: Fleet) -> dict[str, int]:
    return {alias: server.port for alias, server in zip(fleet.hosts, fleet.servers)}


def ran_on(output: str) -> dict[str, int]:
    """``[host] ran-on PORT`` lines, by host."""
    found = {}
    for line in output.splitlines():
        if "ran-on " in line:
            host = line.split("]", 1)[0].lstrip("[")
            found[host] = int(line.rsplit(" ", 1)[1])
    return found


def fabmux(fleet: Fleet, tmp_path: Path, control_dir: Path, *args: str) -> tuple[str, str]:
    (tmp_path / "fabfile.py").write_text(FABFILE)
    (tmp_path / "fabric.yaml").write_text(MUX_YAML.format(control_dir=control_dir))
    proc = fab(tmp_path, fleet.ssh_config, "host1,host2", "-P", *args, "where", name="fabmux")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, proc.stderr


def warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "using a master of fabric-mux's own" in line]


def test_two_hosts_of_one_address_each_run_on_their_own_server(
    one_address: Fleet, sockets: Path, control_dir: Path, tmp_path: Path
) -> None:
    out, err = fabmux(one_address, tmp_path, control_dir)
    assert ran_on(out) == ports(one_address)
    assert one_address.logins() == {"host1": 1, "host2": 1}
    # One master at the user's path (the first host's), one of ours for the other.
    said = warnings(err)
    assert len(said) == 1, err
    assert f"{sockets}/cm-127.0.0.1" in said[0]
    assert all(str(port) in said[0] for port in ports(one_address).values())
    assert master_at(sockets / "cm-127.0.0.1", one_address.servers[0])
    # The next run rides both masters: no new login, the same servers.
    out, err = fabmux(one_address, tmp_path, control_dir)
    assert ran_on(out) == ports(one_address)
    assert one_address.logins() == {"host1": 1, "host2": 1}


def test_one_mux_control_path_for_two_hosts(
    sshd_fleet: FleetFactory, sockets: Path, control_dir: Path, tmp_path: Path
) -> None:
    fleet = sshd_fleet(2)
    out, err = fabmux(fleet, tmp_path, control_dir, "--mux-control-path", f"{sockets}/one")
    assert ran_on(out) == ports(fleet)
    assert fleet.logins() == {"host1": 1, "host2": 1}
    assert len(warnings(err)) == 1, err


def test_the_users_master_of_another_host_at_the_path_is_left_to_it(
    one_address: Fleet, sockets: Path, control_dir: Path
) -> None:
    # The user's own master for host1, its command line as they typed it.
    run_ssh(["ssh", "-F", str(one_address.ssh_config), "-fN", "host1"])
    assert one_address.logins()["host1"] == 1
    config = one_address.fabric_config({"mux": {"control_dir": str(control_dir)}})
    c = MuxConnection("host2", config=config)
    said = c.run("echo $SSH_CONNECTION", hide=True).stdout.split()
    assert int(said[3]) == ports(one_address)["host2"]
    assert c.control_path is not None and c.control_path.startswith(str(control_dir))
    assert one_address.logins() == {"host1": 1, "host2": 1}
    # host1 itself still rides it.
    same = MuxConnection("host1", config=config)
    assert (
        int(same.run("echo $SSH_CONNECTION", hide=True).stdout.split()[3])
        == ports(one_address)["host1"]
    )
    assert same.control_path == f"{sockets}/cm-127.0.0.1"
    assert one_address.logins() == {"host1": 1, "host2": 1}


def test_a_master_whose_command_line_is_gone_is_ridden_only_where_the_path_names_the_route(
    one_address: Fleet, sockets: Path, control_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # `ssh host1 cmd` under ControlMaster auto and ControlPersist: the master it
    # leaves behind shows only "ssh: PATH [mux]" for a command line.
    run_ssh(["ssh", "-F", str(one_address.ssh_config), "host1", "true"])
    config = one_address.fabric_config({"mux": {"control_dir": str(control_dir)}})
    c = MuxConnection("host2", config=config)
    assert (
        int(c.run("echo $SSH_CONNECTION", hide=True).stdout.split()[3])
        == ports(one_address)["host2"]
    )
    assert "does not name the user or port" in caplog.text
    # Even host1 cannot tell it is its own: cm-%h names no user or port.
    first = MuxConnection("host1", config=config)
    first.run("true")
    assert first.control_path is not None and first.control_path.startswith(str(control_dir))
    assert one_address.logins() == {"host1": 2, "host2": 1}


def test_a_user_master_that_dies_is_replaced_in_our_folder_not_at_their_path(
    one_address: Fleet, sockets: Path, control_dir: Path
) -> None:
    """``Host box-master`` with ControlMaster yes, ``Host box`` with only the path:
    once the user's master ends, ``box``'s next command gets a master of ours, in
    our folder, and the user's next ``ssh -fN box-master`` binds their path."""
    fleet = one_address
    path = sockets / "box"
    prepend(
        fleet.ssh_config,
        f"Host box-master\n    HostName 127.0.0.1\n    Port {fleet.servers[0].port}\n"
        f"    ControlMaster yes\n    ControlPath {path}\n"
        f"Host box\n    HostName 127.0.0.1\n    Port {fleet.servers[0].port}\n"
        f"    ControlMaster no\n    ControlPath {path}\n",
    )
    run_ssh(["ssh", "-F", str(fleet.ssh_config), "-fN", "box-master"])
    config = fleet.fabric_config({"mux": {"control_dir": str(control_dir)}})
    c = MuxConnection("box", config=config)
    c.run("true")
    assert c.control_path == str(path)
    run_ssh(["ssh", "-F", str(fleet.ssh_config), "-O", "exit", "box"])
    assert not master_at(path, fleet.servers[0])
    c.run("true")  # the same connection, its master gone
    assert c.control_path is not None and c.control_path.startswith(str(control_dir))
    assert not os.path.exists(path)
    run_ssh(["ssh", "-F", str(fleet.ssh_config), "-fN", "box-master"])
    assert master_at(path, fleet.servers[0])
    assert fleet.logins()["host1"] == 3


#: A ProxyCommand that holds its connection back while ``GATE/hold`` exists
#: (saying so with ``GATE/waiting``) until ``GATE/go`` appears: a slow login.
GATED_RELAY = """
import os, socket, sys, threading, time
host, port, gate = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if os.path.exists(os.path.join(gate, "hold")):
    open(os.path.join(gate, "waiting"), "w").close()
    while not os.path.exists(os.path.join(gate, "go")):
        time.sleep(0.02)
peer = socket.create_connection((host, port))
def up():
    while True:
        data = os.read(0, 65536)
        if not data:
            break
        peer.sendall(data)
    peer.shutdown(socket.SHUT_WR)
threading.Thread(target=up, daemon=True).start()
while True:
    data = peer.recv(65536)
    if not data:
        break
    os.write(1, data)
"""


def test_a_master_that_loses_the_path_to_the_users_own_is_ended(
    sshd_fleet: FleetFactory, sockets: Path, control_dir: Path, tmp_path: Path
) -> None:
    fleet = sshd_fleet(1)
    server = fleet.servers[0]
    gate = tmp_path / "gate"
    gate.mkdir()
    relay = tmp_path / "relay.py"
    relay.write_text(GATED_RELAY)
    prepend(
        fleet.ssh_config,
        f"Host slow\n    HostName 127.0.0.1\n    Port {server.port}\n"
        f"    ProxyCommand {sys.executable} {relay} %h %p {gate}\n"
        f"    ControlMaster auto\n    ControlPath {sockets}/cm-%C\n    ControlPersist 60\n",
    )
    config = fleet.fabric_config({"mux": {"control_dir": str(control_dir)}})
    c = MuxConnection("slow", config=config)
    (gate / "hold").touch()
    outcome: list[object] = []
    worker = threading.Thread(target=lambda: outcome.append(c.run("echo hi", hide=True)))
    worker.start()
    try:
        assert wait_until((gate / "waiting").exists, 30)
        (gate / "hold").unlink()
        # The user's own master takes the path while ours is still logging in.
        run_ssh(["ssh", "-F", str(fleet.ssh_config), "-fN", "-o", "ControlMaster=yes", "slow"])
        path = next(p for p in sockets.iterdir() if stat.S_ISSOCK(p.lstat().st_mode))
    finally:
        (gate / "go").touch()
        worker.join(60)
    assert [result.stdout for result in outcome] == ["hi\n"]  # type: ignore[attr-defined]
    assert c.control_path == str(path)
    check = subprocess.run(
        ["ssh", "-S", str(path), "-O", "check", "x"], check=False, capture_output=True, text=True
    )
    users = int(check.stderr.split("pid=")[1].split(")")[0])
    assert c.master_pid == users
    # Ours logged in too, and found the path taken: it is ended, not left behind.
    assert server.logins() == 2
    assert wait_until(lambda: not master_pids(str(path)), 30)
