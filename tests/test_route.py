"""Gateways against real sshd servers: one bastion login serves every host behind it."""

from __future__ import annotations

from pathlib import Path

import fabric
import pytest
from conftest import Flag
from fabrun import MUX_YAML, run_fab

from fabric_mux import MuxConnection
from fabric_mux.exceptions import ConnectFailed
from fabric_mux.hops import JumpHop, jump_hops, proxy_command
from fabric_mux.master import stop_socket
from fabric_mux.pytest_plugin import SshdFactory
from fabric_mux.testing import SshServer


def write_ssh_config(folder: Path, servers: dict[str, SshServer], jumps: dict[str, str]) -> Path:
    """One client config naming every server, with ProxyJump where ``jumps`` says."""
    known = folder / "known_hosts"
    known.write_text("".join(server.known_hosts.read_text() for server in servers.values()))
    lines = []
    for alias, server in servers.items():
        lines += [
            f"Host {alias}",
            "    HostName 127.0.0.1",
            f"    Port {server.port}",
            f"    User {server.user}",
        ]
        if alias in jumps:
            lines.append(f"    ProxyJump {jumps[alias]}")
    lines.append("Host *")
    lines += [f"    IdentityFile {server.client_key}" for server in servers.values()]
    lines += [
        "    IdentitiesOnly yes",
        f"    UserKnownHostsFile {known}",
        "    GlobalKnownHostsFile /dev/null",
        "    StrictHostKeyChecking yes",
        "    BatchMode yes",
    ]
    path = folder / "ssh_config"
    path.write_text("\n".join(lines) + "\n")
    return path


def forwarded_to(bastion: SshServer, target: SshServer) -> int:
    """direct-tcpip requests the bastion served to ``target`` (its log at LogLevel DEBUG)."""
    return bastion.log.read_text().count(f"target 127.0.0.1 port {target.port}")


@pytest.fixture
def bastion(sshd_factory: SshdFactory) -> SshServer:
    return sshd_factory(sshd_options=["LogLevel DEBUG"], aliases=("bastion",))


@pytest.fixture
def targets(sshd_factory: SshdFactory) -> tuple[SshServer, SshServer]:
    return sshd_factory(aliases=("t1",)), sshd_factory(aliases=("t2",))


@pytest.fixture
def folder(control_dir: Path) -> Path:
    """Beside the sockets: short, private, removed afterwards."""
    path = control_dir / "cfg"
    path.mkdir()
    return path


def mux_config(ssh_config: Path, control_dir: Path) -> fabric.Config:
    return fabric.Config(
        runtime_ssh_path=str(ssh_config), overrides={"mux": {"control_dir": str(control_dir)}}
    )


@pytest.fixture
def t1(targets: tuple[SshServer, SshServer]) -> SshServer:
    return targets[0]


@pytest.fixture
def jumped(bastion: SshServer, t1: SshServer, folder: Path, control_dir: Path) -> fabric.Config:
    """A config in which t1 is reached with ``ProxyJump bastion``."""
    ssh_config = write_ssh_config(folder, {"bastion": bastion, "t1": t1}, {"t1": "bastion"})
    return mux_config(ssh_config, control_dir)


def test_fab_through_proxyjump_logs_in_once_per_host(
    bastion: SshServer,
    targets: tuple[SshServer, SshServer],
    folder: Path,
    control_dir: Path,
    tmp_path: Path,
) -> None:
    t1, t2 = targets
    ssh_config = write_ssh_config(
        folder, {"bastion": bastion, "t1": t1, "t2": t2}, {"t1": "bastion", "t2": "bastion"}
    )
    (tmp_path / "fabfile.py").write_text(
        "from fabric import task\n"
        "@task\ndef a(c):\n    c.run('hostname')\n"
        "@task\ndef b(c):\n    c.run('true')\n"
        "@task\ndef d(c):\n    c.run('echo $SSH_CONNECTION')\n"
    )
    (tmp_path / "fabric.yaml").write_text(MUX_YAML.format(control_dir=control_dir))
    for _ in range(2):
        run_fab(tmp_path, ssh_config, "t1,t2", "a", "b", "d")
    assert (bastion.logins(), t1.logins(), t2.logins()) == (1, 1, 1)
    assert forwarded_to(bastion, t1) == 1
    assert forwarded_to(bastion, t2) == 1


@pytest.mark.parametrize("kind", [MuxConnection, fabric.Connection])
def test_gateway_argument_shares_the_bastion(
    bastion: SshServer,
    targets: tuple[SshServer, SshServer],
    folder: Path,
    control_dir: Path,
    kind: type[fabric.Connection],
) -> None:
    t1, t2 = targets
    config = mux_config(
        write_ssh_config(folder, {"bastion": bastion, "t1": t1, "t2": t2}, {}), control_dir
    )
    for alias in ("t1", "t2", "t1", "t2"):
        gateway = kind("bastion", config=config)
        c = MuxConnection(alias, config=config, gateway=gateway)
        assert c.run("echo $SSH_CONNECTION", hide=True).stdout.split()[2] == "127.0.0.1"
    assert (bastion.logins(), t1.logins(), t2.logins()) == (1, 1, 1)
    assert forwarded_to(bastion, t1) == 1
    assert forwarded_to(bastion, t2) == 1


def test_two_hop_chain(sshd_factory: SshdFactory, folder: Path, control_dir: Path) -> None:
    first = sshd_factory(sshd_options=["LogLevel DEBUG"], aliases=("hop1",))
    second = sshd_factory(sshd_options=["LogLevel DEBUG"], aliases=("hop2",))
    target = sshd_factory(aliases=("inner",))
    config = mux_config(
        write_ssh_config(
            folder, {"hop1": first, "hop2": second, "inner": target}, {"inner": "hop1,hop2"}
        ),
        control_dir,
    )
    for _ in range(3):
        assert MuxConnection("inner", config=config).run("echo in", hide=True).stdout == "in\n"
    assert (first.logins(), second.logins(), target.logins()) == (1, 1, 1)
    assert forwarded_to(first, second) == 1
    assert forwarded_to(second, target) == 1
    assert forwarded_to(first, target) == 0


def test_direct_and_gatewayed_routes_get_separate_masters(
    bastion: SshServer, t1: SshServer, jumped: fabric.Config
) -> None:
    through = MuxConnection("t1", config=jumped)
    direct = MuxConnection("t1", config=jumped, gateway=False)
    through.run("true")
    direct.run("true")
    assert through.control_path != direct.control_path
    assert (bastion.logins(), t1.logins()) == (1, 2)
    assert forwarded_to(bastion, t1) == 1


def test_a_bastion_that_refuses_us_is_named(
    bastion: SshServer, t1: SshServer, jumped: fabric.Config
) -> None:
    bastion.stop()
    with pytest.raises(ConnectFailed, match="Connection refused") as failure:
        MuxConnection("t1", config=jumped).run("true")
    assert str(failure.value).startswith("bastion:")
    assert t1.logins() == 0


def test_a_bastion_that_cannot_reach_the_target_says_so(
    bastion: SshServer, t1: SshServer, jumped: fabric.Config
) -> None:
    t1.stop()
    with pytest.raises(ConnectFailed) as failure:
        MuxConnection("t1", config=jumped).run("true")
    message = str(failure.value)
    assert message.startswith("t1 (via gateway bastion):")
    # The bastion's master refused the forward to t1; ssh on our side says so.
    assert "Stdio forwarding request failed" in message
    assert bastion.logins() == 1


def test_string_gateway_is_the_proxy_command(
    bastion: SshServer, t1: SshServer, folder: Path, control_dir: Path
) -> None:
    ssh_config = write_ssh_config(folder, {"bastion": bastion, "t1": t1}, {})
    config = mux_config(ssh_config, control_dir)
    c = MuxConnection("t1", config=config, gateway=f"ssh -F {ssh_config} -W %h:%p bastion")
    assert c.run("echo via-command", hide=True).stdout == "via-command\n"
    assert forwarded_to(bastion, t1) == 1


@pytest.mark.parametrize(
    ("value", "hops"),
    [
        ("a", [JumpHop("a")]),
        (
            "u@a:2222, ssh://b:22/,c",
            [JumpHop("a", "u", 2222), JumpHop("b", None, 22), JumpHop("c")],
        ),
        ("muxlab@[127.0.0.1]:53487", [JumpHop("127.0.0.1", "muxlab", 53487)]),  # as ssh -G says
        ("[::1]:22", [JumpHop("::1", None, 22)]),
        ("ssh://some%40one;x=y@[2001:db8::1]", [JumpHop("2001:db8::1", "some@one")]),
        ("a@b@host", [JumpHop("host", "a@b")]),
        ("none", []),
    ],
)
def test_proxyjump_values_are_parsed_as_openssh_does(value: str, hops: list[JumpHop]) -> None:
    assert jump_hops(value) == hops


@pytest.mark.parametrize("value", ["@host", "[::1", "host:port", "host:0", "host/x"])
def test_proxyjump_values_openssh_refuses_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match="ProxyJump"):
        jump_hops(value)


def test_proxy_command_goes_through_the_hops_socket_only() -> None:
    command = proxy_command("/usr/bin/ssh", "bastion", "/run/fm/ab%c", "/run/fm/e%c.err")
    assert command.startswith(
        "/usr/bin/ssh -F /dev/null -o ControlMaster=no -o ProxyCommand=false "
    )
    assert "-S /run/fm/ab%%c -W '[%h]:%p' bastion" in command  # ssh expands %h/%p, not our %
    assert command.endswith("2>>/run/fm/e%%c.err")


def test_closing_a_target_leaves_the_callers_gateway_alone(
    bastion: SshServer, t1: SshServer, folder: Path, control_dir: Path, flag: Flag
) -> None:
    config = mux_config(write_ssh_config(folder, {"bastion": bastion, "t1": t1}, {}), control_dir)
    gateway = MuxConnection("bastion", config=config)
    running = gateway.run(flag.waited_for("echo done"), hide=True, asynchronous=True)
    target = MuxConnection("t1", config=config, gateway=gateway)
    target.run("true")
    target.close()
    flag.raise_()
    assert running.join().stdout == "done\n"  # still running when the target closed


def test_masters_stopped_behind_a_gateway_come_back(
    bastion: SshServer, t1: SshServer, jumped: fabric.Config, control_dir: Path
) -> None:
    c = MuxConnection("t1", config=jumped)
    c.run("true")
    for socket_path in control_dir.iterdir():
        if socket_path.is_socket():
            stop_socket(str(socket_path))
    assert c.run("echo back", hide=True).stdout == "back\n"
    assert (bastion.logins(), t1.logins()) == (2, 2)


def test_a_bastion_refusing_the_proxy_commands_login_is_tried_once(
    sshd_factory: SshdFactory, t1: SshServer, folder: Path, control_dir: Path
) -> None:
    # The outer ssh only sees its connection closed ("kex_exchange_identification"),
    # which alone looks like a network blip; the inner ssh said "Permission denied".
    bastion = sshd_factory(aliases=("bastion",), sshd_options=["PubkeyAuthentication no"])
    ssh_config = write_ssh_config(folder, {"bastion": bastion, "t1": t1}, {})
    config = mux_config(ssh_config, control_dir)
    c = MuxConnection("t1", config=config, gateway=f"ssh -F {ssh_config} -W %h:%p bastion")
    with pytest.raises(ConnectFailed, match="ProxyCommand by hand"):
        c.run("true")
    assert bastion.log.read_text().count("Connection from 127.0.0.1") == 1
    assert t1.logins() == 0
