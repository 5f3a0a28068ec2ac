"""Load, faults and bad input, each injected for real against sshd."""

from __future__ import annotations

import os
import pwd
import shlex
import signal
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import fabric
import pytest
from fabric import ThreadingGroup
from fabrun import MUX_YAML, fab_argv, no_agent_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from invoke.exceptions import UnexpectedExit
from pytest_mock import MockerFixture
from waiting import process_gone, wait_until

from fabric_mux import MuxConnection, MuxError
from fabric_mux.argv import SshTarget
from fabric_mux.exceptions import (
    AuthenticationFailed,
    ConnectFailed,
    ControlDirUnsafe,
    HostKeyFailed,
    MasterLost,
    SshNotFound,
)
from fabric_mux.login import start_with_retries
from fabric_mux.master import Master, is_transient
from fabric_mux.pytest_plugin import SshdFactory
from fabric_mux.slots import SessionSlots
from fabric_mux.testing import SshServer


def ssh_processes_for(control_dir: Path) -> list[str]:
    """ssh processes whose argv names a socket in ``control_dir``."""
    found = subprocess.run(
        ["pgrep", "-af", f"ControlPath={control_dir}"], capture_output=True, text=True, check=False
    )
    return [line for line in found.stdout.splitlines() if "pgrep" not in line]


def connections_made(server: SshServer) -> int:
    return server.log.read_text().count("Connection from 127.0.0.1")


def run_in_threads(count: int, work: Callable[[int], None]) -> list[BaseException]:
    errors: list[BaseException] = []
    start = threading.Barrier(count)

    def body(n: int) -> None:
        try:
            start.wait()
            work(n)
        except BaseException as exc:  # collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


# -- load ----------------------------------------------------------------------


def test_sixteen_threads_on_a_server_allowing_two_sessions(
    sshd_factory: SshdFactory, control_dir: Path
) -> None:
    server = sshd_factory(sshd_options=["MaxSessions 2"])
    config = server.fabric_config({"mux": {"control_dir": str(control_dir)}})
    outputs: dict[int, list[str]] = {}

    def work(n: int) -> None:
        c = MuxConnection(server.alias, config=config)
        outputs[n] = [c.run(f"echo {n}.{i}", hide=True).stdout for i in range(5)]

    assert run_in_threads(16, work) == []
    assert outputs == {n: [f"{n}.{i}\n" for i in range(5)] for n in range(16)}
    assert server.logins() == 1


def test_eight_fab_processes_racing_a_cold_host(
    sshd: SshServer, control_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "fabfile.py").write_text(
        "from fabric import task\n@task\ndef hi(c):\n    c.run('echo hi')\n"
    )
    (tmp_path / "fabric.yaml").write_text(MUX_YAML.format(control_dir=control_dir))
    argv = fab_argv(sshd.ssh_config, sshd.alias, "hi")
    env = no_agent_env()
    procs = [
        subprocess.Popen(
            argv, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True
        )
        for _ in range(8)
    ]
    outputs = [proc.communicate()[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * 8
    assert outputs == ["hi\n"] * 8
    assert sshd.logins() == 1


def test_fifty_hosts_in_a_threading_group(sshd_factory: SshdFactory, control_dir: Path) -> None:
    aliases = [f"h{n}" for n in range(50)]
    server = sshd_factory(aliases=tuple(aliases))
    # One sshd, fifty routes: each alias names its own host key entry
    # (HostKeyAlias), as fifty real hosts would have.
    key = server.known_hosts.read_text().split(None, 1)[1]
    known = control_dir / "known_hosts"
    known.write_text("".join(f"{alias} {key}" for alias in aliases))
    per_host = "".join(f"Host {alias}\n    HostKeyAlias {alias}\n" for alias in aliases)
    ssh_config = control_dir / "ssh_config"
    ssh_config.write_text(per_host + server.ssh_config.read_text())
    config = fabric.Config(
        runtime_ssh_path=str(ssh_config),
        overrides={
            "mux": {"control_dir": str(control_dir), "ssh_options": [f"UserKnownHostsFile={known}"]}
        },
    )
    connections = [MuxConnection(alias, config=config) for alias in aliases]
    group = ThreadingGroup.from_connections(connections)
    for _ in range(10):
        results = group.run("echo ok", hide=True)
        assert sorted(r.stdout for r in results.values()) == ["ok\n"] * 50
    assert server.logins() == 50
    assert len({c.control_path for c in connections}) == 50


# -- faults ----------------------------------------------------------------------


def test_a_master_dying_mid_command_raises_promptly(sshd: SshServer, config: fabric.Config) -> None:
    c = MuxConnection(sshd.alias, config=config)
    promise = c.run("echo started; sleep 60", hide=True, asynchronous=True)
    assert wait_until(lambda: "started" in "".join(promise.runner.stdout))
    assert c.master_pid is not None
    os.kill(c.master_pid, signal.SIGKILL)
    killed = time.monotonic()
    with pytest.raises(MasterLost, match="went away"):
        promise.join()
    assert time.monotonic() - killed < 20  # not the remote's 60 s
    assert c.run("echo back", hide=True).stdout == "back\n"
    assert sshd.logins() == 2


def test_a_frozen_server_fails_within_bounds(sshd: SshServer, control_dir: Path) -> None:
    config = sshd.fabric_config(
        {
            "mux": {
                "control_dir": str(control_dir),
                "server_alive_interval": 1,
                "server_alive_count_max": 2,
                "connect_timeout": 2,
                "connect_retries": 0,
            }
        }
    )
    c = MuxConnection(sshd.alias, config=config)
    c.run("true")
    sshd.freeze()
    frozen = time.monotonic()
    try:
        with pytest.raises(MuxError):
            c.run("true")
        # Keep-alives (1 s x 2) end the master; the reply timeout (30 s) is not waited out.
        assert time.monotonic() - frozen < 20
    finally:
        sshd.thaw()


def test_a_remote_signal_is_not_a_lost_master(sshd: SshServer, config: fabric.Config) -> None:
    c = MuxConnection(sshd.alias, config=config)
    with pytest.raises(UnexpectedExit):
        c.run("kill -KILL $$", hide=True)
    assert c.master_pid is not None and not process_gone(c.master_pid)


# -- bad input -------------------------------------------------------------------


@pytest.fixture
def nothing_left(control_dir: Path) -> Iterator[None]:
    """After the test: no socket, lock or ssh process of ours is left."""
    yield
    leftovers = [p.name for p in control_dir.iterdir() if not p.is_dir()]
    assert leftovers == []
    assert ssh_processes_for(control_dir) == []


def mux_config(server: SshServer, control_dir: Path, **mux: object) -> fabric.Config:
    return server.fabric_config({"mux": {"control_dir": str(control_dir), **mux}})


@pytest.mark.usefixtures("nothing_left")
def test_unresolvable_host(sshd: SshServer, control_dir: Path) -> None:
    with pytest.raises(ConnectFailed, match="Could not resolve hostname") as failure:
        MuxConnection("no-such-host.invalid", config=mux_config(sshd, control_dir)).run("true")
    assert "no-such-host.invalid" in str(failure.value)


@pytest.mark.usefixtures("nothing_left")
def test_refused_port_is_retried_then_reported(sshd: SshServer, control_dir: Path) -> None:
    config = mux_config(sshd, control_dir)
    port = sshd.port
    sshd.stop()
    with pytest.raises(ConnectFailed, match=f"port {port}: Connection refused"):
        MuxConnection(sshd.alias, config=config).run("true")


@pytest.mark.usefixtures("nothing_left")
def test_connect_timeout(sshd: SshServer, control_dir: Path) -> None:
    # A listener that never answers: TCP connects, no SSH banner ever comes.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        config = mux_config(sshd, control_dir, connect_timeout=1)
        c = MuxConnection(sshd.alias, port=silent.getsockname()[1], config=config)
        with pytest.raises(ConnectFailed, match="timed out"):
            c.run("true")
    finally:
        silent.close()


@pytest.mark.usefixtures("nothing_left")
def test_authentication_failure_is_not_retried(sshd: SshServer, control_dir: Path) -> None:
    (sshd.directory / "authorized_keys").write_text("")
    with pytest.raises(AuthenticationFailed, match="Permission denied"):
        MuxConnection(sshd.alias, config=mux_config(sshd, control_dir)).run("true")
    assert connections_made(sshd) == 1


@pytest.mark.usefixtures("nothing_left")
def test_changed_host_key(sshd: SshServer, control_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    sshd.known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {(tmp_path / 'other.pub').read_text()}")
    with pytest.raises(HostKeyFailed, match="REMOTE HOST IDENTIFICATION HAS CHANGED"):
        MuxConnection(sshd.alias, config=mux_config(sshd, control_dir)).run("true")
    assert sshd.logins() == 0


@pytest.mark.usefixtures("nothing_left")
def test_ssh_program_missing(sshd: SshServer, control_dir: Path) -> None:
    with pytest.raises(SshNotFound, match="/nonexistent/ssh"):
        MuxConnection(
            sshd.alias, config=mux_config(sshd, control_dir, ssh_path="/nonexistent/ssh")
        ).run("true")


def test_control_dir_owned_by_someone_else(
    sshd: SshServer, control_dir: Path, sshd_user: str
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give the folder away")  # CI runs as root
    os.chown(control_dir, pwd.getpwnam(sshd_user).pw_uid, -1)
    with pytest.raises(ControlDirUnsafe, match=r"owned by .*\(uid \d+\), not by us"):
        MuxConnection(sshd.alias, config=mux_config(sshd, control_dir)).run("true")
    assert os.listdir(control_dir) == []


def test_socket_is_private(sshd: SshServer, config: fabric.Config, control_dir: Path) -> None:
    c = MuxConnection(sshd.alias, config=config)
    c.run("true")
    assert stat.S_IMODE(control_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(os.stat(str(c.control_path)).st_mode) == 0o600


# -- retry decisions (unit) --------------------------------------------------------


@pytest.mark.parametrize(
    ("stderr", "transient"),
    [
        ("ssh: connect to host h port 22: Connection refused", True),
        ("kex_exchange_identification: read: Connection reset by peer", True),
        ("Permission denied (publickey).", False),
        ("Host key verification failed.", False),
        ("ssh: Could not resolve hostname h: Name or service not known", False),
        ("ssh: connect to host h port 22: Connection timed out", False),
    ],
)
def test_which_failures_are_retried(stderr: str, transient: bool) -> None:
    assert is_transient(stderr) is transient


def test_retries_back_off_then_give_up(mocker: MockerFixture, tmp_path: Path) -> None:
    master = Master("ssh", SshTarget("h"), str(tmp_path / "s"), [], 10, 5.0, connect_retries=2)
    refused = ConnectFailed("h", ["ssh"], 255, "ssh: connect to host h port 22: Connection refused")
    start = mocker.patch("fabric_mux.login.start", side_effect=refused)
    sleep = mocker.patch("fabric_mux.login.time.sleep")
    with pytest.raises(ConnectFailed):
        start_with_retries(master, "600")
    assert start.call_count == 3
    assert [c.args[0] for c in sleep.call_args_list] == [0.25, 0.5]


# -- quoting (property) --------------------------------------------------------------

# What a shell argument or an environment value can hold: anything but NUL.
shell_text = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=40
)


@pytest.fixture
def quick(sshd: SshServer, config: fabric.Config) -> MuxConnection:
    return MuxConnection(sshd.alias, config=config)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(values=st.lists(shell_text, min_size=1, max_size=4))
def test_arguments_arrive_byte_for_byte(quick: MuxConnection, values: list[str]) -> None:
    command = "printf '%s\\0' " + " ".join(shlex.quote(v) for v in values)
    assert quick.run(command, hide=True).stdout.split("\0")[:-1] == values


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=shell_text)
def test_env_values_arrive_byte_for_byte(quick: MuxConnection, value: str) -> None:
    assert quick.run('printf %s "$FMUX_V"', env={"FMUX_V": value}, hide=True).stdout == value


# -- session slots (unit) --------------------------------------------------------------


def test_a_slot_released_twice_counts_once() -> None:
    slots = SessionSlots(2)
    slot = slots.take(0)
    assert slot is not None
    slot.release()
    slot.release()
    assert slots.used == 0


def test_refusals_lower_the_limit_without_deadlock() -> None:
    slots = SessionSlots(10)
    held = [slots.take(0) for _ in range(3)]
    assert all(held) and slots.used == 3
    first, second, third = held
    assert first is not None and second is not None and third is not None
    # Two sessions refused at once while three were held: both give their
    # slot back and queue, so the one allowed gets through.
    results: list[bool] = []
    waiters = [
        threading.Thread(target=lambda s=s: results.append(slots.refused(s, 5)))
        for s in (second, third)
    ]
    for waiter in waiters:
        waiter.start()
    assert wait_until(lambda: slots.limit == 1 and slots.used <= 1)
    first.release()
    assert wait_until(lambda: len(results) == 2 or (len(results) == 1 and slots.used == 1))
    assert slots.limit == 1
    assert slots.used == 1  # exactly one of them holds the one allowed slot
    for waiter in waiters:
        waiter.join()
    assert sorted(results) == [False, True]  # the other gave up after its timeout


def test_the_limit_recovers_after_successes() -> None:
    slots = SessionSlots(4)
    slot = slots.take(0)
    assert slot is not None
    slots.refused(slot, 0)
    assert slots.limit == 1
    for _ in range(SessionSlots.RECOVER_AFTER):
        slots.opened()
    assert slots.limit == 2
