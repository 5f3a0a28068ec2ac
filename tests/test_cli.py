"""The fabric-mux command against masters started on a real sshd."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import fabric
import pytest
from waiting import process_gone, wait_until

from fabric_mux import MuxConnection
from fabric_mux.cli import main
from fabric_mux.resolve import KEPT
from fabric_mux.testing import SshServer


def cli(
    capsys: pytest.CaptureFixture[str], sshd: SshServer, control_dir: Path, *args: str
) -> tuple[int, str]:
    code = main(["--control-dir", str(control_dir), "-F", str(sshd.ssh_config), *args])
    return code, capsys.readouterr().out


def test_list_check_and_stop_one_host(
    sshd: SshServer, config: fabric.Config, control_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    c = MuxConnection(sshd.alias, config=config)
    c.run("true")
    code, out = cli(capsys, sshd, control_dir, "list")
    assert code == 0
    assert str(c.master_pid) in out and "alive" in out and sshd.alias in out
    code, out = cli(capsys, sshd, control_dir, "check", sshd.alias)
    assert (code, f"pid={c.master_pid}" in out) == (0, True)
    code, out = cli(capsys, sshd, control_dir, "stop", sshd.alias)
    assert (code, "master stopped" in out) == (0, True)
    assert c.master_pid is not None and wait_until(lambda: process_gone(c.master_pid or 0))
    assert not os.path.exists(str(c.control_path))
    code, out = cli(capsys, sshd, control_dir, "check", sshd.alias)
    assert (code, "no master running" in out) == (1, True)


def test_stale_sockets_are_listed_and_cleared(
    sshd: SshServer, config: fabric.Config, control_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    c = MuxConnection(sshd.alias, config=config)
    c.run("true")
    assert c.master_pid is not None
    os.kill(c.master_pid, signal.SIGKILL)
    assert wait_until(lambda: process_gone(c.master_pid or 0))
    code, out = cli(capsys, sshd, control_dir, "list")
    assert "stale" in out
    code, out = cli(capsys, sshd, control_dir, "stop", "--all")
    assert code == 0
    assert os.listdir(control_dir) in ([], [KEPT])  # kept ssh -G answers may stay


def test_stop_all_ends_every_master(
    sshd: SshServer,
    config: fabric.Config,
    control_dir: Path,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    # Another identity is another route, so another master.
    extra_key = tmp_path / "extra"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(extra_key)], check=True
    )
    direct = MuxConnection(sshd.alias, config=config)
    with_key = MuxConnection(
        sshd.alias, config=config, connect_kwargs={"key_filename": [str(extra_key)]}
    )
    direct.run("true")
    with_key.run("true")
    pids = {direct.master_pid, with_key.master_pid}
    assert len(pids) == 2
    code, out = cli(capsys, sshd, control_dir, "stop", "--all")
    assert (code, out.strip()) == (0, f"stopped 2 master(s) in {control_dir}")
    assert wait_until(lambda: all(process_gone(pid or 0) for pid in pids))
    assert os.listdir(control_dir) in ([], [KEPT])  # kept ssh -G answers may stay


def test_console_script_is_installed(control_dir: Path) -> None:
    program = Path(sys.executable).with_name("fabric-mux")
    proc = subprocess.run(
        [str(program), "--control-dir", str(control_dir), "list"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (proc.returncode, proc.stdout) == (0, f"no masters in {control_dir}\n")


@pytest.mark.parametrize("where", ["", "roles/web"])
def test_the_projects_fabric_yaml_is_read_as_fab_finds_it(
    where: str,
    sshd: SshServer,
    config: fabric.Config,
    control_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    c = MuxConnection(sshd.alias, config=config)
    c.run("true")
    # fab run in a subfolder finds the fabfile above it, and reads the
    # fabric.yaml beside it: so does the CLI.
    (tmp_path / "fabfile.py").write_text("")
    (tmp_path / "fabric.yaml").write_text(f"mux:\n  control_dir: {control_dir}\n")
    (tmp_path / where).mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(tmp_path / where)
    assert main(["-F", str(sshd.ssh_config), "check", sshd.alias]) == 0
    assert f"pid={c.master_pid}" in capsys.readouterr().out


SILENT = """
import socket, sys
listener = socket.socket(socket.AF_UNIX)
listener.bind(sys.argv[1])
listener.listen(8)
print("listening", flush=True)
held = []
while True:
    held.append(listener.accept()[0])  # and never a word: blocked at a question
"""


SILENT_NAME = "0" * 20


def test_stop_all_goes_past_a_master_that_does_not_answer(
    sshd: SshServer, config: fabric.Config, control_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    c = MuxConnection(sshd.alias, config=config)
    c.run("true")
    # Named as our masters are, sorted before every other: asked first.
    silent = subprocess.Popen(
        [sys.executable, "-c", SILENT, str(control_dir / SILENT_NAME)],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert silent.stdout is not None and silent.stdout.readline() == b"listening\n"
        code, out = cli(capsys, sshd, control_dir, "list")
        assert code == 0 and SILENT_NAME in out and "frozen" in out
        code, out = cli(capsys, sshd, control_dir, "stop", "--all")
        assert code == 1
        assert "stopped 1 master(s)" in out
        wait_until(lambda: process_gone(c.master_pid or 0))
        assert silent.poll() is None  # not ours to kill: nothing of ours answers there
    finally:
        silent.kill()
        silent.wait()


def test_list_shows_control_characters_of_a_route_as_text(
    sshd: SshServer, control_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A route's words come from files and argv that another program may have named:
    # an escape sequence among them must not act on the terminal that lists it.
    odd = tmp_path / "cfg\x1b[2J\x1b[Hgone\r"
    odd.mkdir()
    ssh_config = odd / "ssh_config"
    ssh_config.write_text(sshd.ssh_config.read_text())
    config = fabric.Config(
        runtime_ssh_path=str(ssh_config), overrides={"mux": {"control_dir": str(control_dir)}}
    )
    MuxConnection(sshd.alias, config=config).run("true", hide=True)
    code = main(["--control-dir", str(control_dir), "list"])
    out = capsys.readouterr().out
    assert code == 0
    assert "cfg\\e[2J\\e[Hgone\\r/ssh_config" in out
    assert "\x1b" not in out and "\r" not in out


def test_a_bad_setting_is_said_once_as_fabric_muxs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "fabric.yaml").write_text("mux:\n  persist: ten minutes\n")
    monkeypatch.chdir(tmp_path)
    assert main(["--control-dir", str(tmp_path), "list"]) == 1
    assert capsys.readouterr().err == (
        "fabric-mux: mux.persist takes seconds, a time as ControlPersist takes it (10m), "
        "or yes/no, not 'ten minutes'\n"
    )


def test_an_ssh_config_that_is_not_there_is_one_line(tmp_path: Path) -> None:
    program = Path(sys.executable).with_name("fabric-mux")
    missing = tmp_path / "nonexistent"
    for args in (["-F", str(missing), "check", "web1"], ["stop", "web1", "-F", str(missing)]):
        proc = subprocess.run(
            [str(program), "--control-dir", str(tmp_path), *args],
            capture_output=True,
            text=True,
            check=False,
        )
        assert (proc.returncode, proc.stdout, proc.stderr) == (
            2,
            "",
            f"fabric-mux: cannot read the ssh_config file {missing} (-F): "
            "No such file or directory\n",
        )
