"""MuxConnection against a real sshd: one login per host, and invoke's run semantics kept."""

from __future__ import annotations

import io
import logging
import os
import signal
import socket
import stat
import subprocess
import threading
import time
from pathlib import Path

import fabric
import pytest
from invoke.exceptions import AuthFailure, CommandTimedOut, UnexpectedExit
from invoke.watchers import Responder
from waiting import process_gone, wait_until

from fabric_mux import MuxConnection
from fabric_mux.exceptions import (
    AuthenticationFailed,
    BadSshOption,
    ConnectFailed,
    ControlDirUnsafe,
    HostKeyFailed,
    SessionRefused,
)
from fabric_mux.testing import SshServer


def test_many_commands_one_login(sshd: SshServer, config: fabric.Config) -> None:
    c = MuxConnection(sshd.alias, config=config)
    outputs = [c.run(f"echo {i}", hide=True).stdout for i in range(20)]
    assert outputs == [f"{i}\n" for i in range(20)]
    assert c.run("whoami", hide=True).stdout.strip() == sshd.user
    assert sshd.logins() == 1
    c.close()


def test_two_connection_objects_share_the_master(sshd: SshServer, config: fabric.Config) -> None:
    first = MuxConnection(sshd.alias, config=config)
    second = MuxConnection(sshd.alias, config=config)
    first.run("true")
    second.run("true")
    assert first.control_path == second.control_path
    assert isinstance(first.control_path, str)
    assert first.master_pid == second.master_pid
    assert sshd.logins() == 1


def test_eight_threads_one_login(sshd: SshServer, config: fabric.Config) -> None:
    results: dict[int, list[str]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def work(n: int) -> None:
        try:
            c = MuxConnection(sshd.alias, config=config)
            start.wait()
            results[n] = [c.run(f"echo {n}-{i}", hide=True).stdout.strip() for i in range(5)]
        except BaseException as exc:  # reported below, with the test's failure
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [], [repr(e) for e in errors]
    assert results == {n: [f"{n}-{i}" for i in range(5)] for n in range(8)}
    assert sshd.logins() == 1


def test_exit_code_warn_and_unexpected_exit(sshd: SshServer, config: fabric.Config) -> None:
    c = MuxConnection(sshd.alias, config=config)
    result = c.run("echo out; echo err >&2; exit 3", warn=True, hide=True)
    assert (result.exited, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert result.connection is c
    assert not result.ok
    with pytest.raises(UnexpectedExit) as failure:
        c.run("exit 7", hide=True)
    assert failure.value.result.exited == 7
    assert failure.value.result.connection is c  # type: ignore[attr-defined]  # fabric Result


def test_hide_and_echo(
    sshd: SshServer, config: fabric.Config, capsys: pytest.CaptureFixture[str]
) -> None:
    c = MuxConnection(sshd.alias, config=config)
    c.run("echo shown; echo shown-err >&2")
    c.run("echo hidden", hide=True)
    c.run("true", echo=True)
    captured = capsys.readouterr()
    assert "shown\n" in captured.out and "shown-err\n" in captured.err
    assert "hidden" not in captured.out
    assert "true" in captured.out  # echo prints the command


@pytest.mark.usefixtures("remote_pty")
def test_pty_gives_a_terminal_with_term_and_size(
    sshd: SshServer, config: fabric.Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TERM", "xterm-256color")
    c = MuxConnection(sshd.alias, config=config)
    result = c.run("tty; echo $TERM; stty size; echo to-stderr >&2", pty=True, hide=True)
    lines = result.stdout.splitlines()
    assert lines[0].startswith("/dev/pts/")
    assert lines[1] == "xterm-256color"
    assert len(lines[2].split()) == 2  # rows cols
    assert "to-stderr" in result.stdout  # a pty merges the streams
    assert result.stderr == ""
    assert c.run("test -t 0", warn=True, hide=True).exited == 1  # no pty unless asked


@pytest.mark.usefixtures("remote_pty")
def test_pty_passes_bytes_unchanged(sshd: SshServer, config: fabric.Config) -> None:
    c = MuxConnection(sshd.alias, config=config)
    result = c.run("printf 'a\\nb\\n'", pty=True, hide=True)
    # One \r\n per line from the remote pty; a cooked local pty would add another \r.
    assert result.stdout == "a\r\nb\r\n"


@pytest.mark.parametrize("inline", [True, False])
def test_env_values_are_quoted_once(sshd: SshServer, config: fabric.Config, inline: bool) -> None:
    value = 'it\'s "quoted" $HOME `id` \\ ; done'
    c = MuxConnection(sshd.alias, config=config, inline_ssh_env=inline)
    result = c.run('printf %s "$FMUX_VALUE"', env={"FMUX_VALUE": value}, hide=True)
    assert result.stdout == value


def test_env_name_that_is_not_a_variable_is_refused(sshd: SshServer, config: fabric.Config) -> None:
    c = MuxConnection(sshd.alias, config=config)
    with pytest.raises(ValueError, match="not a shell variable"):
        c.run("true", env={"A B": "1"})


def test_timeout_raises_without_waiting_for_the_remote_end(
    sshd: SshServer, config: fabric.Config
) -> None:
    c = MuxConnection(sshd.alias, config=config)
    with pytest.raises(CommandTimedOut) as failure:
        c.run("echo started; sleep 30; echo finished", timeout=1, hide=True)
    assert failure.value.result.stdout == "started\n"  # "finished" would mean we waited
    assert c.run("echo next", hide=True).stdout == "next\n"


def test_watchers_answer_prompts(sshd: SshServer, config: fabric.Config) -> None:
    c = MuxConnection(sshd.alias, config=config)
    responder = Responder(pattern=r"name\? ", response="world\n")
    result = c.run(
        "printf 'name? ' >&2; read name; echo hello $name", watchers=[responder], hide=True
    )
    assert result.stdout == "hello world\n"


def test_in_stream_feeds_stdin_to_the_end(sshd: SshServer, config: fabric.Config) -> None:
    c = MuxConnection(sshd.alias, config=config)
    text = "".join(f"line {i} é\n" for i in range(20000))
    result = c.run("cat", in_stream=io.StringIO(text), hide=True)
    assert result.stdout == text


def test_large_multibyte_output_is_decoded_intact(sshd: SshServer, config: fabric.Config) -> None:
    c = MuxConnection(sshd.alias, config=config)
    result = c.run("for i in $(seq 30000); do printf 'é€'; done", hide=True)
    assert result.stdout == "é€" * 30000


def test_cd_and_prefix(sshd: SshServer, config: fabric.Config) -> None:
    c = MuxConnection(sshd.alias, config=config)
    with c.cd("/tmp"), c.prefix("export FMUX_P=prefixed"):
        result = c.run("pwd; echo $FMUX_P", hide=True)
    assert result.stdout == "/tmp\nprefixed\n"


def test_sudo_with_a_password(sshd: SshServer, config: fabric.Config, test_password: str) -> None:
    c = MuxConnection(sshd.alias, config=config)
    result = c.sudo("whoami", password=test_password, hide=True)
    assert result.stdout.strip() == "root"
    with pytest.raises(AuthFailure):
        c.sudo("-k true", password="wrong-password", hide=True)
    assert sshd.logins() == 1


def test_remote_killed_by_signal_is_an_exit_not_a_connection_error(
    sshd: SshServer, config: fabric.Config
) -> None:
    c = MuxConnection(sshd.alias, config=config)
    with pytest.raises(UnexpectedExit) as failure:
        c.run("kill -9 $$", hide=True)
    assert failure.value.result.exited == -1  # as stock Fabric: no exit status came
    assert c.run("echo alive", hide=True).stdout == "alive\n"
    assert sshd.logins() == 1


def test_a_killed_master_is_replaced_transparently(sshd: SshServer, config: fabric.Config) -> None:
    c = MuxConnection(sshd.alias, config=config)
    c.run("true")
    old_pid = c.master_pid
    assert old_pid is not None
    os.kill(old_pid, signal.SIGKILL)
    assert wait_until(lambda: process_gone(old_pid))
    assert os.path.exists(str(c.control_path))  # the stale socket a killed master leaves
    assert c.run("echo again", hide=True).stdout == "again\n"
    assert MuxConnection(sshd.alias, config=config).run("echo new", hide=True).stdout == "new\n"
    assert c.master_pid != old_pid
    assert sshd.logins() == 2


def test_no_persist_ends_the_master_with_the_connection(sshd: SshServer, control_dir: Path) -> None:
    config = sshd.fabric_config({"mux": {"control_dir": str(control_dir), "persist": 0}})
    c = MuxConnection(sshd.alias, config=config)
    c.run("true")
    c.run("true")
    pid = c.master_pid
    assert pid is not None
    c.close()
    assert wait_until(lambda: process_gone(pid))
    assert sshd.logins() == 1


def test_persisting_master_outlives_close(sshd: SshServer, config: fabric.Config) -> None:
    c = MuxConnection(sshd.alias, config=config)
    c.run("true")
    c.close()
    again = MuxConnection(sshd.alias, config=config)
    again.run("true")
    assert again.master_pid == c.master_pid
    assert sshd.logins() == 1


def test_control_dir_is_private_and_made_when_missing(sshd: SshServer, control_dir: Path) -> None:
    folder = control_dir / "made"
    config = sshd.fabric_config({"mux": {"control_dir": str(folder)}})
    c = MuxConnection(sshd.alias, config=config)
    c.run("true")
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_ISSOCK(os.stat(str(c.control_path)).st_mode)
    assert os.path.dirname(str(c.control_path)) == str(folder)


def test_a_shared_control_dir_is_refused_and_left_untouched(
    sshd: SshServer, control_dir: Path
) -> None:
    os.chmod(control_dir, 0o777)
    config = sshd.fabric_config({"mux": {"control_dir": str(control_dir)}})
    with pytest.raises(ControlDirUnsafe, match="0777"):
        MuxConnection(sshd.alias, config=config).run("true")
    assert os.listdir(control_dir) == []
    assert sshd.logins() == 0


def test_refused_port_is_a_connect_error_quoting_ssh(
    sshd: SshServer, config: fabric.Config
) -> None:
    sshd.stop()
    with pytest.raises(ConnectFailed, match="Connection refused") as failure:
        MuxConnection(sshd.alias, config=config).run("true")
    assert sshd.alias in str(failure.value)
    assert failure.value.exit_code == 255


def test_an_assigned_port_is_the_port_connected_to(sshd: SshServer, config: fabric.Config) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    c = MuxConnection(sshd.alias, config=config)
    c.port = closed  # as stock Fabric lets one change it before connecting
    with pytest.raises(ConnectFailed, match="Connection refused"):
        c.run("true")
    assert sshd.logins() == 0


def test_unknown_host_key_is_refused(sshd: SshServer, config: fabric.Config) -> None:
    sshd.known_hosts.write_text("")
    with pytest.raises(HostKeyFailed, match="Host key verification failed"):
        MuxConnection(sshd.alias, config=config).run("true")
    assert sshd.logins() == 0


def test_rejected_key_is_an_authentication_error(sshd: SshServer, config: fabric.Config) -> None:
    (sshd.directory / "authorized_keys").write_text("")
    with pytest.raises(AuthenticationFailed, match="Permission denied"):
        MuxConnection(sshd.alias, config=config).run("true")
    assert sshd.logins() == 0


def test_bad_ssh_option_is_reported_before_any_login(sshd: SshServer, control_dir: Path) -> None:
    config = sshd.fabric_config(
        {"mux": {"control_dir": str(control_dir), "ssh_options": ["NoSuchOption=1"]}}
    )
    with pytest.raises(BadSshOption, match="Bad configuration option"):
        MuxConnection(sshd.alias, config=config).run("true")
    assert sshd.logins() == 0


def test_masters_started_and_reused_are_logged(
    sshd: SshServer, config: fabric.Config, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="fabric_mux")
    first = MuxConnection(sshd.alias, config=config)
    first.run("true")
    MuxConnection(sshd.alias, config=config).run("true")
    messages = [record.getMessage() for record in caplog.records]
    started = [m for m in messages if m.startswith("started master pid")]
    assert started == [
        f"started master pid {first.master_pid} for {sshd.alias} at {first.control_path}"
    ]
    assert any(m.startswith("starting master: ['") and "'-M'" in m for m in messages)
    assert (
        f"reusing master pid {first.master_pid} for {sshd.alias} at {first.control_path}"
        in messages
    )


def test_forward_agent_reaches_the_remote(
    sshd: SshServer, config: fabric.Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent_socket = tmp_path / "agent.sock"
    agent = subprocess.Popen(
        ["ssh-agent", "-D", "-a", str(agent_socket)], stdout=subprocess.DEVNULL
    )
    try:
        assert wait_until(agent_socket.exists)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(agent_socket))
        subprocess.run(["ssh-add", "-q", str(sshd.client_key)], check=True, capture_output=True)
        c = MuxConnection(sshd.alias, config=config, forward_agent=True)
        listed = c.run("ssh-add -l", hide=True, warn=True)
        assert listed.exited == 0, listed.stderr
        assert "ED25519" in listed.stdout
        without = MuxConnection(sshd.alias, config=config).run("ssh-add -l", hide=True, warn=True)
        assert without.exited != 0  # not forwarded unless asked
    finally:
        agent.terminate()
        agent.wait()


def test_a_busy_master_makes_a_run_wait_a_bounded_time(sshd: SshServer, control_dir: Path) -> None:
    config = sshd.fabric_config(
        {"mux": {"control_dir": str(control_dir), "max_sessions": 1, "reply_timeout": 1}}
    )
    c = MuxConnection(sshd.alias, config=config)
    busy = c.run("sleep 20", hide=True, asynchronous=True)
    asked = time.monotonic()
    with pytest.raises(SessionRefused, match="no session slot came free"):
        MuxConnection(sshd.alias, config=config).run("true")
    assert time.monotonic() - asked < 10  # reply_timeout is 1 s; not the 20 s sleep
    c.close()  # ends the sleeping session, as closing a stock Connection does
    with pytest.raises(UnexpectedExit):
        busy.join()


def test_disowned_commands_give_their_slot_back(sshd: SshServer, control_dir: Path) -> None:
    config = sshd.fabric_config({"mux": {"control_dir": str(control_dir), "max_sessions": 2}})
    c = MuxConnection(sshd.alias, config=config)
    for _ in range(3):
        # invoke 2 returns None for a disowned run; invoke 3 a Result with no exit code.
        result = c.run("sleep 30", disown=True)
        assert result is None or (result.exited is None and result.disowned)
    assert c.run("echo still", hide=True, timeout=10).stdout == "still\n"
    c.close()


def test_in_stream_file_keeps_what_python_already_read(
    sshd: SshServer, config: fabric.Config, tmp_path: Path
) -> None:
    source = tmp_path / "lines.txt"
    source.write_text("first\nsecond\nthird\n")
    c = MuxConnection(sshd.alias, config=config)
    with open(source) as stream:
        assert stream.readline() == "first\n"
        assert c.run("cat", in_stream=stream, hide=True).stdout == "second\nthird\n"


def test_a_promise_joined_twice_closes_nothing_else(
    sshd: SshServer, config: fabric.Config, tmp_path: Path
) -> None:
    c = MuxConnection(sshd.alias, config=config)
    promise = c.run("echo once", hide=True, asynchronous=True)
    assert promise.join().stdout == "once\n"
    with open(tmp_path / "other", "w") as other:  # may reuse the run's fd numbers
        promise.join()
        other.write("still open")
