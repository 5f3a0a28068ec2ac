"""Setups sysadmins have every day: bastions by address, terminals that hang up, Ctrl-C,
an unusable XDG_RUNTIME_DIR, the CLI beside fab, fabmux without a fabfile."""

from __future__ import annotations

import contextlib
import logging
import os
import pty
import select
import signal
import subprocess
import sys
import tempfile
import termios
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fabric
import pytest
from conftest import Flag
from fabrun import MUX_YAML, default_signals, fab, fab_argv, with_default_signals
from waiting import process_gone, wait_until

from fabric_mux import MuxConnection
from fabric_mux.cli import main as cli_main
from fabric_mux.controldir import prepare_control_dir
from fabric_mux.exceptions import AuthenticationFailed, HostKeyFailed
from fabric_mux.protocol import S_SESSION_OPENED, MuxClient
from fabric_mux.pytest_plugin import FleetFactory, SshdFactory
from fabric_mux.runners import MuxRemote
from fabric_mux.testing import Fleet, SshServer

# -- a bastion named by its address ---------------------------------------------------


def jump_by_address(fleet: Fleet, form: str) -> None:
    """Replace the fleet's ``ProxyJump bastion`` by the bastion's address."""
    assert fleet.bastion_server is not None
    bastion = fleet.bastion_server
    hop = form.format(user=bastion.user, port=bastion.port)
    text = fleet.ssh_config.read_text().replace("ProxyJump bastion", f"ProxyJump {hop}")
    fleet.ssh_config.write_text(text)


@pytest.mark.parametrize(
    "form",
    ["{user}@127.0.0.1:{port}", "ssh://{user}@127.0.0.1:{port}", "{user}@[127.0.0.1]:{port}"],
)
def test_a_bastion_named_by_address_is_a_hop_with_a_master(
    sshd_fleet: FleetFactory, control_dir: Path, form: str
) -> None:
    fleet = sshd_fleet(2, bastion=True)
    jump_by_address(fleet, form)
    config = fleet.fabric_config({"mux": {"control_dir": str(control_dir)}})
    for host in fleet.hosts:
        for _ in range(2):
            assert MuxConnection(host, config=config).run("hostname", hide=True).ok
    assert fleet.logins() == {"host1": 1, "host2": 1, "bastion": 1}


# -- masters outlive the terminal that started them --------------------------------------

SPAWN = textwrap.dedent(
    """
    import fabric, sys
    from fabric_mux import MuxConnection
    config = fabric.Config(runtime_ssh_path=sys.argv[1],
                           overrides={"mux": {"control_dir": sys.argv[2]}})
    c = MuxConnection(sys.argv[3], config=config)
    c.run("true")
    print("master", c.master_pid, flush=True)
    sys.stdin.read()  # until the terminal goes
    """
)


def on_a_terminal_that_hangs_up(fleet: Fleet, control_dir: Path, host: str) -> int:
    """Start ``host``'s master from a process on a pty, then hang the pty up; the pid."""
    pid, terminal = pty.fork()
    if pid == 0:  # pragma: no cover - the child becomes the launcher
        default_signals()  # the hangup must be able to end it
        os.execv(
            sys.executable,
            [sys.executable, "-c", SPAWN, str(fleet.ssh_config), str(control_dir), host],
        )
    said = b""
    while b"\n" not in said.split(b"master ", 1)[-1]:
        ready, _, _ = select.select([terminal], [], [], 30)
        assert ready, said
        said += os.read(terminal, 1024)
    master = int(said.split(b"master ", 1)[1].split()[0])
    os.close(terminal)  # the hangup: SIGHUP to the launcher's session
    os.waitpid(pid, 0)
    return master


def test_masters_behind_a_bastion_outlive_their_launchers_terminal(
    sshd_fleet: FleetFactory, control_dir: Path
) -> None:
    fleet = sshd_fleet(1, bastion=True)
    master = on_a_terminal_that_hangs_up(fleet, control_dir, "host1")
    config = fleet.fabric_config({"mux": {"control_dir": str(control_dir)}})
    again = MuxConnection("host1", config=config)
    assert again.run("echo still", hide=True).stdout == "still\n"
    assert again.master_pid == master
    assert fleet.logins() == {"host1": 1, "bastion": 1}  # the next run logged in nowhere


# -- Ctrl-C ----------------------------------------------------------------------------

INTERRUPTED = textwrap.dedent(
    """
    import fabric, sys
    from fabric_mux import MuxConnection
    config = fabric.Config(runtime_ssh_path=sys.argv[1],
                           overrides={"mux": {"control_dir": sys.argv[2]}})
    c = MuxConnection(sys.argv[3], config=config)
    c.run("true")
    print("running", flush=True)
    c.run(sys.argv[4], hide=True)
    """
)


def test_ctrl_c_names_what_may_still_run_and_where(
    sshd: SshServer, control_dir: Path, flag: Flag
) -> None:
    command = flag.waited_for("echo finished")
    child = subprocess.Popen(
        with_default_signals([sys.executable, "-c", INTERRUPTED, str(sshd.ssh_config),
                              str(control_dir), sshd.alias, command]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        assert child.stdout is not None and child.stdout.readline() == "running\n"
        assert wait_until(lambda: "while [" in processes_of(sshd.user))  # it runs remotely
        child.send_signal(signal.SIGINT)
        _, stderr = child.communicate(timeout=30)
    finally:
        flag.raise_()
        child.kill()
    lines = [line for line in stderr.splitlines() if line.startswith("fabric-mux:")]
    assert len(lines) == 1
    assert f"{sshd.alias}: interrupted; the remote command may still be running" in lines[0]
    assert "pty=True" in lines[0] and "while [" in lines[0]


@pytest.fixture
def up(sshd: SshServer, control_dir: Path) -> Iterator[MuxConnection]:
    """A connection to ``sshd`` with its master up, closed after the test."""
    c = MuxConnection(
        sshd.alias, config=sshd.fabric_config({"mux": {"control_dir": str(control_dir)}})
    )
    c.open()
    yield c
    c.close()


@pytest.mark.parametrize("where", ["at the master's answer", "as the threads start"])
def test_ctrl_c_as_the_session_opens_names_it_too(
    sshd: SshServer, up: MuxConnection, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch, where: str,
) -> None:  # fmt: skip
    # SIGINT can land once the master has the session's request (and so runs the
    # command) but before invoke waits: it only forwards Ctrl-C once waiting.
    c = up
    reply = MuxClient._reply

    def interrupted_at_the_answer(client: MuxClient, request_id: int) -> Any:
        answer = reply(client, request_id)
        if answer[0] == S_SESSION_OPENED:
            raise KeyboardInterrupt
        return answer

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        if where == "at the master's answer":
            patched.setattr(MuxClient, "_reply", interrupted_at_the_answer)
        else:
            patched.setattr(MuxRemote, "start_timer", interrupted)
        with pytest.raises(KeyboardInterrupt):
            c.run("sleep 0", hide=True)
    said = [line for line in capsys.readouterr().err.splitlines() if "fabric-mux:" in line]
    assert len(said) == 1
    assert f"{sshd.alias}: interrupted; the remote command may still be running" in said[0]
    assert "'sleep 0'" in said[0]
    assert c.run("echo still here", hide=True).stdout == "still here\n"


def test_ctrl_c_before_the_request_says_nothing_ran(
    up: MuxConnection, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Waiting for a session slot (or a login): nothing was sent, nothing runs.
    c = up
    slots = c.mux_master.sessions

    def interrupted(timeout: float | None) -> Any:
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(slots, "take", interrupted)
        with pytest.raises(KeyboardInterrupt):
            c.run("touch /tmp/never", hide=True)
    assert "fabric-mux:" not in capsys.readouterr().err
    assert c.run("echo still here", hide=True).stdout == "still here\n"


def processes_of(user: str) -> str:
    return subprocess.run(
        ["ps", "-u", user, "-o", "args="], capture_output=True, text=True, check=False
    ).stdout


# -- an unusable XDG_RUNTIME_DIR ----------------------------------------------------------


def test_an_xdg_runtime_dir_of_another_user_falls_back_with_a_log_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root can make a folder of another user's")
    theirs = Path(tempfile.mkdtemp(prefix="fmx-", dir="/tmp"))
    try:
        os.chown(theirs, 1, 1)  # daemon's: as /run/user/1000 is after su
        theirs.chmod(0o700)
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(theirs))
        monkeypatch.setenv("HOME", str(tmp_path))
        caplog.set_level(logging.INFO, logger="fabric_mux")
        folder = prepare_control_dir(None)
        assert folder == tmp_path / ".ssh" / "fabric-mux"
        assert any("XDG_RUNTIME_DIR is not usable" in r.getMessage() for r in caplog.records)
        assert list(theirs.iterdir()) == []
    finally:
        os.rmdir(theirs)


# -- the CLI sees what fab sees -----------------------------------------------------------


def test_the_cli_takes_options_anywhere_and_the_environment_too(
    sshd: SshServer,
    config: fabric.Config,
    control_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    c = MuxConnection(sshd.alias, config=config)
    c.run("true")
    assert cli_main(["check", sshd.alias, "-F", str(sshd.ssh_config), "--control-dir",
                     str(control_dir)]) == 0  # fmt: skip
    assert f"pid={c.master_pid}" in capsys.readouterr().out
    monkeypatch.setenv("FABRIC_MUX_CONTROL_DIR", str(control_dir))
    assert cli_main(["-F", str(sshd.ssh_config), "check", sshd.alias]) == 0
    assert cli_main(["stop", "--all", "--control-dir", str(control_dir)]) == 0
    assert "stopped 1 master(s)" in capsys.readouterr().out
    assert wait_until(lambda: process_gone(c.master_pid or 0))


def test_list_and_check_make_nothing(
    sshd: SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    assert cli_main(["list"]) == 0
    assert cli_main(["-F", str(sshd.ssh_config), "check", sshd.alias]) == 1
    assert list(tmp_path.iterdir()) == []  # no ~/.ssh/fabric-mux made


def test_list_names_the_hop_and_check_points_at_another_route(
    sshd_fleet: FleetFactory, control_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fleet = sshd_fleet(1, bastion=True)
    config = fleet.fabric_config({"mux": {"control_dir": str(control_dir)}})
    MuxConnection("host1", config=config).run("true")
    assert cli_main(["list", "--control-dir", str(control_dir)]) == 0
    listed = capsys.readouterr().out
    assert "host1" in listed and "via bastion" in listed and "2>>" not in listed
    # Without the -F that the run used, host1 is another route: say where its master is.
    assert cli_main(["check", "host1", "--control-dir", str(control_dir)]) == 1
    said = capsys.readouterr().out
    assert "no master running" in said
    assert f"fabric-mux check -F {fleet.ssh_config} host1" in said


# -- fabmux without a fabfile ------------------------------------------------------------


def test_fabmux_with_only_a_command_reads_the_projects_fabric_yaml(
    sshd: SshServer, control_dir: Path, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "fabric.yaml").write_text(f"mux:\n  control_dir: {control_dir}\n")
    for _ in range(2):
        done = fab(project, sshd.ssh_config, sshd.alias, "--", "echo", "ran", name="fabmux")
        assert done.returncode == 0, done.stderr
        assert "ran" in done.stdout
    assert any(path.is_socket() for path in control_dir.iterdir())  # the project's folder
    assert sshd.logins() == 1


# -- messages ---------------------------------------------------------------------------


def test_a_refused_passphrase_says_so(sshd: SshServer, control_dir: Path, tmp_path: Path) -> None:
    key = tmp_path / "locked"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "right", "-f", str(key)], check=True)
    (sshd.directory / "authorized_keys").write_text(key.with_suffix(".pub").read_text())
    config = sshd.fabric_config(
        {"mux": {"control_dir": str(control_dir), "ssh_options": ["BatchMode=no"]}}
    )
    kwargs = {"key_filename": [str(key)], "passphrase": "wrong"}
    refused = "passphrase from connect_kwargs was given and refused"
    with pytest.raises(AuthenticationFailed, match=refused):
        MuxConnection(sshd.alias, config=config, connect_kwargs=kwargs).run("true")


def test_an_unknown_host_key_with_no_terminal_gets_a_hint(
    sshd: SshServer, config: fabric.Config
) -> None:
    sshd.known_hosts.write_text("")
    with pytest.raises(HostKeyFailed, match="StrictHostKeyChecking accept-new"):
        MuxConnection(sshd.alias, config=config).run("true")


def test_ctrl_c_at_a_password_prompt_gives_the_terminal_back_whole(
    sshd_factory: SshdFactory, control_dir: Path, tmp_path: Path
) -> None:
    server = sshd_factory(aliases=("pw",), sshd_options=["PasswordAuthentication yes"])
    server.ssh_config.write_text(
        "Host pw\n    BatchMode no\n    PubkeyAuthentication no\n"
        "    PreferredAuthentications password\n" + server.ssh_config.read_text()
    )
    (tmp_path / "fabfile.py").write_text(
        "from fabric import task\n\n@task\ndef t(c):\n    c.run('true')\n"
    )
    (tmp_path / "fabric.yaml").write_text(MUX_YAML.format(control_dir=control_dir))
    pid, terminal = pty.fork()
    if pid == 0:  # pragma: no cover - the child is the user's fabmux
        default_signals()  # as a terminal's shell starts it: Ctrl-C interrupts
        os.chdir(tmp_path)
        argv = fab_argv(server.ssh_config, "pw", "t", name="fabmux")
        os.execv(argv[0], argv)
    said = b""
    while b"password:" not in said:
        ready, _, _ = select.select([terminal], [], [], 60)
        assert ready, said
        said += os.read(terminal, 1024)
    assert not termios.tcgetattr(terminal)[3] & termios.ECHO  # asking, without echo
    os.write(terminal, b"\x03")  # Ctrl-C
    while True:
        ready, _, _ = select.select([terminal], [], [], 60)
        assert ready, said
        try:
            chunk = os.read(terminal, 1024)
        except OSError:  # the child is gone: the pty hung up
            break
        if not chunk:
            break
        said += chunk
    attributes = termios.tcgetattr(terminal)
    os.close(terminal)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
    assert attributes[3] & termios.ECHO, said  # echo is back on
    assert b"Traceback" not in said, said.decode(errors="replace")
    assert server.logins() == 0
    assert not [p for p in control_dir.iterdir() if p.name.endswith(".lock")]
