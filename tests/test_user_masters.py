"""The masters the user's own ssh_config names are ridden as OpenSSH rides them,
and never stopped: the ControlMaster workflow sysadmins already have.

Each case is a user's setup against a real server, counting the logins in its
log: ``ssh -fN HOST-master`` in the morning (ControlMaster yes), ``ControlMaster
auto`` under ``Host *``, a socket made by hand with ``ssh -M -S``, a
password-only host run from cron, a bastion.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import fabric
import pytest
from fabrun import MUX_YAML, fab, run_fab
from waiting import wait_until

from fabric_mux import MuxConnection, askpass
from fabric_mux.cli import main as cli_main
from fabric_mux.exceptions import AuthenticationFailed, EnvNotSent, UserMasterLeftAlone
from fabric_mux.pytest_plugin import FleetFactory, SshdFactory
from fabric_mux.testing import SshServer

FABFILE = "from fabric import task\n\n@task\ndef t(c):\n    c.run('echo ran-on-' + c.host)\n"


@pytest.fixture
def sockets() -> Iterator[Path]:
    """The user's own folder of control sockets (as ~/.ssh would be)."""
    folder = Path(tempfile.mkdtemp(prefix="fmu-", dir="/tmp"))
    try:
        yield folder
    finally:
        for path in folder.iterdir():
            if stat.S_ISSOCK(path.lstat().st_mode):
                subprocess.run(
                    ["ssh", "-S", str(path), "-O", "exit", "x"], check=False, capture_output=True
                )
        subprocess.run(["rm", "-rf", str(folder)], check=False)


def prepend(ssh_config: Path, text: str) -> None:
    """Put the user's own blocks first: in ssh_config the first value wins."""
    ssh_config.write_text(text + ssh_config.read_text())


def ssh(server: SshServer, *args: str, env: dict[str, str] | None = None) -> None:
    run_ssh(["ssh", "-F", str(server.ssh_config), *args], env)


def run_ssh(argv: list[str], env: dict[str, str] | None = None) -> None:
    """Run ssh as the user would, to its end. Its messages go to a file, not a pipe:
    before 8.1 a master that ``-f`` sends to the background keeps the caller's
    stderr, and a pipe would never end."""
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.run(
            argv,
            check=False,
            stdin=subprocess.DEVNULL,
            stdout=errors,
            stderr=errors,
            timeout=60,
            env=env,
        )
        errors.seek(0)
        said = errors.read().decode("utf-8", "replace")
    assert proc.returncode == 0, f"{argv} exited {proc.returncode}: {said}"


def master_at(path: Path, server: SshServer) -> bool:
    """Whether a master answers ``ssh -O check`` at ``path``."""
    proc = subprocess.run(
        ["ssh", "-F", str(server.ssh_config), "-S", str(path), "-O", "check", server.alias],
        capture_output=True,
        check=False,
    )
    return proc.returncode == 0


@pytest.fixture
def first_shape(sshd_factory: SshdFactory, sockets: Path) -> SshServer:
    """``Host myhost-master`` (ControlMaster yes) and ``Host myhost``, one ControlPath."""
    server = sshd_factory(aliases=("myhost", "myhost-master"))
    prepend(
        server.ssh_config,
        f"Host myhost-master\n    ControlMaster yes\n    ControlPath {sockets}/socket-myhost\n"
        f"Host myhost\n    ControlPath {sockets}/socket-myhost\n",
    )
    return server


@pytest.fixture
def second_shape(sshd_factory: SshdFactory, sockets: Path) -> SshServer:
    """``ControlMaster auto`` under ``Host *``."""
    server = sshd_factory(aliases=("myhost",))
    prepend(
        server.ssh_config,
        f"Host *\n    ControlMaster auto\n    ControlPath {sockets}/cm-%C\n"
        "    ControlPersist 10m\n",
    )
    return server


def config_of(server: SshServer, control_dir: Path, **mux: object) -> fabric.Config:
    return server.fabric_config({"mux": {"control_dir": str(control_dir), **mux}})


def test_the_morning_master_is_ridden_and_outlives_everything(
    first_shape: SshServer, sockets: Path, control_dir: Path, tmp_path: Path
) -> None:
    ssh(first_shape, "-fN", "myhost-master")
    assert first_shape.logins() == 1
    c = MuxConnection("myhost", config=config_of(first_shape, control_dir))
    assert c.run("echo hi", hide=True).stdout == "hi\n"
    assert c.control_path == f"{sockets}/socket-myhost"
    c.close()
    (tmp_path / "fabfile.py").write_text(FABFILE)
    (tmp_path / "fabric.yaml").write_text(MUX_YAML.format(control_dir=control_dir))
    assert "ran-on-" in run_fab(tmp_path, first_shape.ssh_config, "myhost", "t")
    assert first_shape.logins() == 1  # OpenSSH alone: 0 new logins, and so here
    # Nothing of fabric-mux's stops it.
    assert cli_main(["--control-dir", str(control_dir), "stop", "--all"]) == 0
    assert master_at(sockets / "socket-myhost", first_shape)


def test_a_user_master_is_listed_as_theirs_and_never_stopped(
    first_shape: SshServer,
    sockets: Path,
    control_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ssh(first_shape, "-fN", "myhost-master")
    MuxConnection("myhost", config=config_of(first_shape, control_dir)).run("true")
    folder = ["--control-dir", str(control_dir), "-F", str(first_shape.ssh_config)]
    assert cli_main([*folder, "list"]) == 0
    listed = capsys.readouterr().out
    assert "(yours)" in listed and f"{sockets}/socket-myhost" in listed
    assert cli_main([*folder, "stop", "myhost"]) == 1
    said = capsys.readouterr().err
    assert "ssh -O exit myhost" in said
    assert cli_main([*folder, "stop", "--all"]) == 0
    assert "left 1 of your own alone" in capsys.readouterr().out
    assert master_at(sockets / "socket-myhost", first_shape)
    with pytest.raises(UserMasterLeftAlone, match="ssh -O exit myhost"):
        MuxConnection("myhost", config=config_of(first_shape, control_dir)).mux_master.stop()
    assert master_at(sockets / "socket-myhost", first_shape)
    # Once the user's master ends, the link to its socket goes at the next stop --all;
    # killed, it leaves its socket (theirs, left there), which nothing answers.
    (link,) = control_dir.glob("user-*")
    pid = int(
        subprocess.run(
            ["ssh", "-F", str(first_shape.ssh_config), "-O", "check", "myhost"],
            capture_output=True,
            text=True,
            check=True,
        )
        .stderr.split("pid=")[1]
        .split(")")[0]
    )
    os.kill(pid, 9)
    assert wait_until(lambda: not os.path.exists(f"/proc/{pid}"))
    assert (sockets / "socket-myhost").exists()
    assert cli_main([*folder, "stop", "--all"]) == 0
    assert not link.is_symlink() and (sockets / "socket-myhost").exists()


def test_with_no_master_up_and_controlmaster_unset_fabric_mux_starts_its_own(
    first_shape: SshServer, sockets: Path, control_dir: Path
) -> None:
    c = MuxConnection("myhost", config=config_of(first_shape, control_dir))
    c.run("true")
    assert c.control_path is not None and c.control_path.startswith(str(control_dir))
    assert not (sockets / "socket-myhost").exists()  # the user's path stays theirs
    assert first_shape.logins() == 1


def test_auto_fab_first_then_ssh_rides_fabs_master(
    second_shape: SshServer, sockets: Path, control_dir: Path
) -> None:
    c = MuxConnection("myhost", config=config_of(second_shape, control_dir))
    c.run("true")
    assert c.control_path is not None and c.control_path.startswith(f"{sockets}/cm-")
    c.close()
    ssh(second_shape, "myhost", "true")
    assert second_shape.logins() == 1  # as OpenSSH alone: one login in all
    # Started with the user's ControlPersist (10m), not fabric-mux's.
    argv = Path(f"/proc/{c.master_pid}/cmdline").read_bytes().split(b"\0")
    assert b"ControlPersist=600" in argv


def test_auto_ssh_first_then_fab_rides_its_master(
    second_shape: SshServer, sockets: Path, control_dir: Path, tmp_path: Path
) -> None:
    ssh(second_shape, "myhost", "true")
    (tmp_path / "fabfile.py").write_text(FABFILE)
    (tmp_path / "fabric.yaml").write_text(MUX_YAML.format(control_dir=control_dir))
    assert "ran-on-" in run_fab(tmp_path, second_shape.ssh_config, "myhost", "t")
    assert second_shape.logins() == 1


def test_a_connection_unlike_bare_ssh_never_rides_the_users_master(
    second_shape: SshServer, sockets: Path, control_dir: Path
) -> None:
    ssh(second_shape, "myhost", "true")
    # Another user than ssh_config's: OpenSSH would run root's commands on
    # the user's master (the ControlPath has no %r); fabric-mux logs in anew.
    root = MuxConnection("myhost", user="root", config=config_of(second_shape, control_dir))
    assert root.ssh_target().user == "root"
    assert root.route().master(make_folder=False).control_path.startswith(str(control_dir))
    # A key given to Fabric (ssh_config's IdentityFile stays too: another view).
    keyed = MuxConnection(
        "myhost",
        connect_kwargs={"key_filename": str(second_shape.client_key) + ".copy"},
        config=config_of(second_shape, control_dir),
    )
    Path(str(second_shape.client_key) + ".copy").write_bytes(second_shape.client_key.read_bytes())
    Path(str(second_shape.client_key) + ".copy").chmod(0o600)
    keyed.run("true")
    assert keyed.control_path is not None
    assert keyed.control_path.startswith(str(control_dir))
    assert second_shape.logins() == 2
    # fabric-mux's own ssh options that change what ssh does count too.
    agent = MuxConnection(
        "myhost",
        config=config_of(second_shape, control_dir, ssh_options=["ForwardAgent=yes"]),
    )
    agent.run("true")
    assert agent.control_path is not None and agent.control_path.startswith(str(control_dir))
    assert second_shape.logins() == 3


def test_user_masters_off_keeps_to_fabric_muxs_own(
    second_shape: SshServer, sockets: Path, control_dir: Path
) -> None:
    ssh(second_shape, "myhost", "true")
    c = MuxConnection("myhost", config=config_of(second_shape, control_dir, user_masters=False))
    c.run("true")
    assert c.control_path is not None and c.control_path.startswith(str(control_dir))
    assert second_shape.logins() == 2


def test_a_socket_made_by_hand_is_ridden_through_mux_control_path(
    sshd: SshServer, sockets: Path, control_dir: Path, tmp_path: Path
) -> None:
    sock = sockets / ".sock"
    ssh(sshd, "-fNM", "-S", str(sock), sshd.alias)
    c = MuxConnection(sshd.alias, config=config_of(sshd, control_dir, control_path=str(sock)))
    assert c.run("echo hi", hide=True).stdout == "hi\n"
    assert c.control_path == str(sock)
    (tmp_path / "fabfile.py").write_text(FABFILE)
    (tmp_path / "fabric.yaml").write_text(MUX_YAML.format(control_dir=control_dir))
    argv = ["t", "--mux-control-path", str(sock)]
    proc = fab(tmp_path, sshd.ssh_config, sshd.alias, *argv[1:], argv[0], name="fabmux")
    assert proc.returncode == 0, proc.stderr
    assert "ran-on-" in proc.stdout
    assert sshd.logins() == 1
    assert master_at(sock, sshd)


def test_mux_control_path_expands_ssh_tokens_and_starts_there(
    sshd: SshServer, sockets: Path, control_dir: Path
) -> None:
    path = f"{sockets}/%r@%h:%p"
    c = MuxConnection(sshd.alias, config=config_of(sshd, control_dir, control_path=path))
    c.run("true")
    assert c.control_path == f"{sockets}/{sshd.user}@127.0.0.1:{sshd.port}"
    assert os.stat(c.control_path).st_uid == os.geteuid()
    hashed = MuxConnection(
        sshd.alias, config=config_of(sshd, control_dir, control_path="~/.fmux-test-%C")
    )
    where = hashed.route().master(make_folder=False).control_path
    assert where.startswith(os.path.expanduser("~/.fmux-test-")) and "%" not in where
    assert len(where) == len(os.path.expanduser("~/.fmux-test-")) + 40  # %C: a sha1


def test_a_mux_control_path_with_a_space_works_end_to_end(
    sshd: SshServer, sockets: Path, control_dir: Path, tmp_path: Path
) -> None:
    folder = sockets / "my sockets"
    folder.mkdir(mode=0o700)
    (tmp_path / "fabfile.py").write_text(FABFILE)
    (tmp_path / "fabric.yaml").write_text(MUX_YAML.format(control_dir=control_dir))
    path = f"{folder}/it's %h"  # a quote of the other kind is plain text too
    for _ in range(2):  # started there, then ridden
        done = fab(tmp_path, sshd.ssh_config, sshd.alias, "--mux-control-path", path, "t",
                   name="fabmux")  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("ran-on-")
    assert master_at(folder / "it's 127.0.0.1", sshd)
    assert sshd.logins() == 1
    c = MuxConnection(sshd.alias, config=config_of(sshd, control_dir, control_path=path))
    assert c.run("echo hi", hide=True).stdout == "hi\n"
    assert c.control_path == f"{folder}/it's 127.0.0.1"
    assert sshd.logins() == 1


def test_a_control_path_with_a_double_quote_is_one_line_naming_the_key(
    sshd: SshServer, sockets: Path, control_dir: Path, tmp_path: Path
) -> None:
    path = f'{sockets}/"quoted"'
    (tmp_path / "fabfile.py").write_text(FABFILE)
    (tmp_path / "fabric.yaml").write_text(MUX_YAML.format(control_dir=control_dir))
    done = fab(tmp_path, sshd.ssh_config, sshd.alias, "--mux-control-path", path, "t",
               name="fabmux")  # fmt: skip
    assert (done.returncode, done.stderr) == (
        1,
        "fabric-mux: --mux-control-path takes a path without a double quote, a line break "
        f"or a NUL (ssh's options cannot carry them), not {path!r}\n",
    )
    with (tmp_path / "fabric.yaml").open("a") as yaml:
        yaml.write(f"  control_path: '{path}'\n")
    done = fab(tmp_path, sshd.ssh_config, sshd.alias, "t", name="fabmux")
    assert (done.returncode, done.stderr) == (
        1,
        "fabric-mux: mux.control_path takes a path without a double quote, a line break "
        f"or a NUL (ssh's options cannot carry them), not {path!r}\n",
    )
    assert sshd.logins() == 0


PASSWORD_ONLY = (
    "Host *\n    BatchMode no\n    PubkeyAuthentication no\n    PreferredAuthentications password\n"
)


def test_a_cron_run_rides_the_master_the_user_typed_a_password_for(
    sshd_factory: SshdFactory,
    sockets: Path,
    control_dir: Path,
    test_password: str,
    tmp_path: Path,
) -> None:
    server = sshd_factory(aliases=("pw",), sshd_options=["PasswordAuthentication yes"])
    prepend(server.ssh_config, f"Host pw\n    ControlMaster auto\n    ControlPath {sockets}/%C\n")
    prepend(server.ssh_config, PASSWORD_ONLY)
    # Neither the morning's nor the cron run: nothing can answer a prompt.
    c = MuxConnection("pw", config=config_of(server, control_dir))
    with pytest.raises(AuthenticationFailed) as failed:
        c.run("true")
    assert "pw" in str(failed.value) and "ssh -fN pw" in str(failed.value)
    assert "Failed password" not in server.log.read_text()
    # The user types the password once (an askpass stands in for them).
    askpass = tmp_path / "askpass"
    askpass.write_text(f"#!/bin/sh\necho '{test_password}'\n")
    askpass.chmod(0o700)
    # DISPLAY: how ssh before 8.4 (no SSH_ASKPASS_REQUIRE) is told to use an askpass.
    env = {**os.environ, "SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force"}
    env["DISPLAY"] = ":0"
    ssh(server, "-fN", "pw", env=env)
    assert server.logins() == 1
    cron = MuxConnection("pw", config=config_of(server, control_dir))
    assert cron.run("echo ok", hide=True).stdout == "ok\n"
    assert server.logins() == 1
    assert server.log.read_text().count("Failed password") == 0


def test_a_bastion_the_user_has_a_master_for_costs_no_login(
    sshd_fleet: FleetFactory, sockets: Path, control_dir: Path
) -> None:
    fleet = sshd_fleet(1, bastion=True)
    prepend(
        fleet.ssh_config,
        f"Host bastion\n    ControlMaster auto\n    ControlPath {sockets}/%C\n"
        "    ControlPersist 10m\n",
    )
    run_ssh(["ssh", "-F", str(fleet.ssh_config), "-fN", "bastion"])
    assert fleet.logins()["bastion"] == 1
    config = fleet.fabric_config({"mux": {"control_dir": str(control_dir)}})
    c = MuxConnection("host1", config=config)
    assert c.run("echo hi", hide=True).stdout == "hi\n"
    assert fleet.logins()["bastion"] == 1
    assert fleet.logins()["host1"] == 1
    # The forward's error log is ours (in our folder, 0600), and gone once started.
    hop = c.route().hop()
    assert hop is not None
    assert [p.name for p in sockets.iterdir()] == [Path(hop.master().control_path).name]
    assert not list(control_dir.glob("*.err"))


def test_a_start_at_the_users_path_keeps_its_sockets_in_our_folder(
    sshd_factory: SshdFactory,
    sockets: Path,
    control_dir: Path,
    test_password: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The askpass socket of a master that starts at the user's path (a folder
    others may read, such as /tmp) lives in fabric-mux's private folder."""
    server = sshd_factory(aliases=("pw",), sshd_options=["PasswordAuthentication yes"])
    prepend(server.ssh_config, f"Host pw\n    ControlMaster auto\n    ControlPath {sockets}/%C\n")
    prepend(server.ssh_config, PASSWORD_ONLY)
    bound: list[str] = []
    enter = askpass.AskpassServer.__enter__

    def spy(self: askpass.AskpassServer) -> askpass.AskpassServer:
        bound.append(self.path)
        return enter(self)

    monkeypatch.setattr(askpass.AskpassServer, "__enter__", spy)
    config = server.fabric_config(
        {"mux": {"control_dir": str(control_dir)}, "connect_kwargs": {"password": test_password}}
    )
    c = MuxConnection("pw", config=config)
    assert c.run("echo ok", hide=True).stdout == "ok\n"
    assert c.control_path is not None and c.control_path.startswith(f"{sockets}/")
    assert bound and all(os.path.dirname(path) == str(control_dir) for path in bound)
    assert [p.name for p in sockets.iterdir()] == [Path(c.control_path).name]


def test_a_users_socket_inside_the_control_folder_is_theirs_to_stop(
    sshd: SshServer, control_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A socket named with ``--mux-control-path`` that lies in the control folder is
    listed once, as the user's, and ``stop --all`` leaves it alone."""
    sock = control_dir / "mine"
    ssh(sshd, "-fNM", "-S", str(sock), sshd.alias)
    c = MuxConnection(sshd.alias, config=config_of(sshd, control_dir, control_path=str(sock)))
    c.run("true")
    folder = ["--control-dir", str(control_dir), "-F", str(sshd.ssh_config)]
    assert cli_main([*folder, "list"]) == 0
    listed = [line for line in capsys.readouterr().out.splitlines() if str(c.master_pid) in line]
    assert len(listed) == 1 and "(yours)" in listed[0]
    assert cli_main([*folder, "stop", "--all"]) == 0
    assert "stopped 0 master(s)" in capsys.readouterr().out
    assert master_at(sock, sshd)
    ssh(sshd, "-S", str(sock), "-O", "exit", sshd.alias)


def test_the_sockets_of_a_killed_start_are_no_masters_and_are_cleared(
    control_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A start killed while it served prompts leaves its askpass socket: not a
    master, not listed as one; ``stop --all`` removes it."""
    left = control_dir / "askpass-0123abcd"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(left))
    assert cli_main(["--control-dir", str(control_dir), "list"]) == 0
    assert "stale" not in capsys.readouterr().out
    assert cli_main(["--control-dir", str(control_dir), "stop", "--all"]) == 0
    assert not left.exists()


def test_env_a_users_master_would_drop_is_refused_and_what_it_passes_arrives(
    first_shape: SshServer, control_dir: Path
) -> None:
    """The server accepts ``FMUX_*`` (AcceptEnv); a master passes a session's
    variables only where its SendEnv names them: fabric-mux's own name every
    one, the user's what their ssh_config says."""
    ssh(first_shape, "-fN", "myhost-master")
    config = config_of(first_shape, control_dir)
    c = MuxConnection("myhost", config=config, inline_ssh_env=False)
    with pytest.raises(EnvNotSent, match=r"SendEnv FMUX_A"):
        c.run("echo $FMUX_A", env={"FMUX_A": "sent"}, hide=True)
    with pytest.raises(ValueError, match="not a shell variable name"):
        c.run("true", env={"A B": "1"}, hide=True)
    # Once their master passes it on, it arrives.
    ssh(first_shape, "-O", "exit", "myhost")
    prepend(first_shape.ssh_config, "Host myhost-master\n    SendEnv FMUX_*\n")
    ssh(first_shape, "-fN", "myhost-master")
    again = MuxConnection("myhost", config=config, inline_ssh_env=False)
    said = again.run("echo $FMUX_A", env={"FMUX_A": "sent"}, hide=True).stdout
    assert said == "sent\n"
    # A master of fabric-mux's own passes it on.
    own = MuxConnection(
        "myhost",
        config=config_of(first_shape, control_dir, user_masters=False),
        inline_ssh_env=False,
    )
    assert own.run("echo $FMUX_A", env={"FMUX_A": "sent"}, hide=True).stdout == "sent\n"
    assert first_shape.logins() == 3
