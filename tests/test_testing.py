"""The test server itself, checked with the system ``ssh`` client."""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path

import fabric
import pytest
from pytest_mock import MockerFixture
from waiting import wait_until

from devtools.accounts import TEST_USER, ensure_account
from fabric_mux.pytest_plugin import SshdFactory
from fabric_mux.testing import SshdNotFound, SshServer, ssh_server


def ssh(
    server: SshServer, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the system ``ssh`` with the server's client config."""
    return subprocess.run(
        ["ssh", "-F", str(server.ssh_config), *args],
        check=False,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        start_new_session=True,  # no terminal: ssh asks SSH_ASKPASS, on every version
    )


def proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name; ``None`` once gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(errors="replace")
    except FileNotFoundError:
        return None
    return stat[stat.rindex(")") + 2 :].split()


def alive(pid: int) -> bool:
    fields = proc_stat(pid)
    return fields is not None and fields[0] != "Z"


def parent(pid: int) -> int:
    fields = proc_stat(pid)
    assert fields is not None, f"process {pid} is gone"
    return int(fields[1])


def test_each_login_is_counted_once(sshd: SshServer) -> None:
    assert sshd.logins() == 0
    for _ in range(2):
        result = ssh(sshd, sshd.alias, "true")
        assert result.returncode == 0, result.stderr
    # The log also holds two "Accepted key" lines a login: they must not count.
    assert sshd.logins() == 2
    assert sshd.logins(sshd.user) == 2
    assert sshd.logins("nobody") == 0


def test_logs_in_as_the_sshd_user(sshd: SshServer, sshd_user: str) -> None:
    result = ssh(sshd, sshd.alias, "id -un")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == sshd.user == sshd_user


def test_every_alias_reaches_the_server(sshd_factory: SshdFactory) -> None:
    server = sshd_factory(aliases=("fmux-a", "fmux-b"))
    for alias in server.aliases:
        result = ssh(server, alias, "echo ok")
        assert (result.returncode, result.stdout) == (0, "ok\n"), result.stderr
    assert server.alias == "fmux-a"
    assert server.logins() == 2


def test_client_config_is_self_contained(sshd: SshServer) -> None:
    text = sshd.ssh_config.read_text()
    assert "~" not in text
    assert ".ssh" not in text
    assert f"IdentityFile {sshd.client_key}\n" in text
    assert f"UserKnownHostsFile {sshd.known_hosts}\n" in text
    assert sshd.known_hosts.read_text().startswith(f"[127.0.0.1]:{sshd.port} ssh-ed25519 ")


def test_private_keys_stay_private(sshd: SshServer) -> None:
    host_key = sshd.directory / "hostkeys" / "ssh_host_ed25519_key"
    assert host_key.parent.stat().st_mode & 0o777 == 0o700
    assert host_key.stat().st_mode & 0o777 == 0o600
    assert sshd.client_key.stat().st_mode & 0o777 == 0o600


def test_environment_is_accepted_for_fmux_names(sshd: SshServer) -> None:
    result = ssh(
        sshd,
        "-o", "SetEnv=FMUX_PROBE=42 OTHER_PROBE=43",
        sshd.alias,
        'echo "$FMUX_PROBE:$OTHER_PROBE"',
    )  # fmt: skip
    assert result.stdout == "42:\n", result.stderr


def test_password_is_never_asked_in_batch_mode(sshd_factory: SshdFactory) -> None:
    server = sshd_factory(sshd_options=["PasswordAuthentication yes"])
    result = ssh(server, "-o", "PubkeyAuthentication=no", server.alias, "true")
    assert result.returncode == 255
    # "password" in the list shows the option replaced the default "no".
    assert "Permission denied (publickey,password)" in result.stderr
    assert server.logins() == 0


def test_password_login(sshd_factory: SshdFactory, tmp_path: Path, test_password: str) -> None:
    server = sshd_factory(sshd_options=["PasswordAuthentication yes"])
    askpass = tmp_path / "askpass"
    askpass.write_text(f"#!/bin/sh\necho '{test_password}'\n")
    askpass.chmod(0o700)
    # Before 8.4 ssh ignores SSH_ASKPASS_REQUIRE: with no terminal it asks
    # SSH_ASKPASS only when DISPLAY is set.
    env = {
        **os.environ,
        "SSH_ASKPASS": str(askpass),
        "SSH_ASKPASS_REQUIRE": "force",
        "DISPLAY": os.environ.get("DISPLAY", ":0"),
    }
    result = ssh(
        server,
        "-o", "BatchMode=no",
        "-o", "PubkeyAuthentication=no",
        server.alias,
        "id -un",
        env=env,
    )  # fmt: skip
    assert result.stdout.strip() == server.user, result.stderr
    assert f"Accepted password for {server.user} from" in server.log.read_text()
    assert server.logins() == 1


@pytest.mark.parametrize("known", ["empty", "other key"])
def test_unknown_host_key_is_refused(sshd: SshServer, tmp_path: Path, known: str) -> None:
    known_hosts = tmp_path / "known_hosts"
    if known == "empty":
        known_hosts.touch()
    else:
        client_public = sshd.client_key.with_name(sshd.client_key.name + ".pub").read_text()
        known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {client_public}")
    result = ssh(sshd, "-o", f"UserKnownHostsFile={known_hosts}", sshd.alias, "true")
    assert result.returncode == 255
    assert "Host key verification failed" in result.stderr
    assert sshd.logins() == 0


@pytest.mark.parametrize("options", [(), ("Subsystem sftp false",)])
def test_sftp_subsystem_can_be_replaced(
    sshd_factory: SshdFactory, options: tuple[str, ...]
) -> None:
    # Replaced, not added to: a second "Subsystem sftp" line makes sshd refuse its config.
    server = sshd_factory(sshd_options=options)
    result = subprocess.run(
        ["sftp", "-F", str(server.ssh_config), "-b", "-", server.alias],
        check=False,
        input="pwd\n",
        capture_output=True,
        text=True,
        timeout=30,
    )
    if options:
        assert result.returncode != 0
        assert "Remote working directory" not in result.stdout
    else:
        assert result.returncode == 0, result.stderr
        assert "Remote working directory: /" in result.stdout
    assert "Starting session: subsystem 'sftp'" in server.log.read_text()


def test_bad_option_is_reported(sshd_factory: SshdFactory) -> None:
    with pytest.raises(RuntimeError, match="Bad configuration option: NoSuchOption"):
        sshd_factory(sshd_options=["NoSuchOption yes"])


def test_missing_sshd_is_reported(tmp_path: Path) -> None:
    with pytest.raises(SshdNotFound):
        with ssh_server(tmp_path, sshd_path=str(tmp_path / "sshd")):
            pass


def test_folder_the_sshd_user_cannot_reach_is_reported(tmp_path: Path, sshd_user: str) -> None:
    if sshd_user == pwd.getpwuid(os.geteuid()).pw_name:
        pytest.skip("only matters when the remote user is another account")
    # pytest's tmp_path lies in a private folder: sshd would only say "Permission denied".
    with pytest.raises(ValueError, match="cannot reach"):
        with ssh_server(tmp_path, user=sshd_user):
            pass


def test_stop_ends_every_process(sshd_factory: SshdFactory) -> None:
    server = sshd_factory()
    argv = ["ssh", "-F", str(server.ssh_config), server.alias, "echo $PPID $$; exec sleep 60"]
    with subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as client:
        assert client.stdout is not None
        line = client.stdout.readline()
        assert line, client.communicate()[1]
        session, shell = (int(pid) for pid in line.split())
        # The connection's privileged sshd, which has left the listener's session.
        monitor = parent(session)
        assert parent(monitor) == server.pid
        pids = [server.pid, monitor, session, shell]
        assert all(alive(pid) for pid in pids)

        server.stop()

        assert [pid for pid in pids if alive(pid)] == []
        assert client.wait(timeout=10) == 255
    server.stop()


def test_fabric_config_reaches_the_server(sshd: SshServer) -> None:
    config = sshd.fabric_config({"run": {"hide": True}})
    assert config.run.hide is True
    with fabric.Connection(sshd.alias, config=config) as connection:
        result = connection.run("id -un", in_stream=False)
    assert result.stdout.strip() == sshd.user
    assert sshd.logins() == 1


def test_control_dir_is_private_and_short(control_dir: Path, config: fabric.Config) -> None:
    assert control_dir.stat().st_mode & 0o777 == 0o700
    # Leaves room under the ~90 byte socket path limit for a hashed name.
    assert len(str(control_dir)) < 40
    assert config.mux.control_dir == str(control_dir)


def test_ensure_account_needs_root(mocker: MockerFixture) -> None:
    mocker.patch("devtools.accounts.os.geteuid", return_value=1000)
    with pytest.raises(PermissionError, match="only root"):
        ensure_account("fmux-never-made")


def shadow_entry(name: str) -> str:
    return next(
        line for line in Path("/etc/shadow").read_text().splitlines() if line.startswith(f"{name}:")
    )


def test_ensure_account_again_changes_nothing(sshd_user: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root makes accounts")
    before = shadow_entry(TEST_USER)
    sudoers = Path("/etc/sudoers.d") / TEST_USER
    granted = sudoers.exists()
    # What the bench and the demo ask for must not undo what the tests need.
    assert ensure_account(TEST_USER) == TEST_USER
    assert shadow_entry(TEST_USER) == before
    assert sudoers.exists() == granted
    assert pwd.getpwnam(TEST_USER).pw_shell == "/bin/bash"


def test_routes_are_distinct_routes_to_one_server(sshd: SshServer, tmp_path: Path) -> None:
    first = sshd.routes(3, prefix="a")
    second = sshd.routes(2, prefix="b")
    lines = sshd.known_hosts.read_text().splitlines()
    assert len(lines) == 1 + 3 + 2  # one line a name, whatever was added before
    for alias in (*first, *second):
        result = ssh(sshd, alias, "echo $SSH_CONNECTION")
        assert result.returncode == 0, result.stderr
    assert sshd.logins() == 5


def test_keyboard_interactive_is_off_on_every_sshd(sshd_factory: SshdFactory) -> None:
    # sshd before 8.7 reads only ChallengeResponseAuthentication and turns it on by default.
    server = sshd_factory(sshd_options=["PasswordAuthentication yes"])
    result = ssh(server, "-o", "PubkeyAuthentication=no", server.alias, "true")
    assert "Permission denied (publickey,password)." in result.stderr, result.stderr


def test_a_keyboard_interactive_option_is_read_under_both_names(sshd_factory: SshdFactory) -> None:
    server = sshd_factory(sshd_options=["KbdInteractiveAuthentication yes"])
    config = (server.directory / "sshd_config").read_text()
    assert "KbdInteractiveAuthentication yes\n" in config
    assert "ChallengeResponseAuthentication yes\n" in config
    assert "Authentication no\n" not in config.replace("PasswordAuthentication no\n", "")
    result = ssh(server, "-o", "PubkeyAuthentication=no", server.alias, "true")
    assert "Permission denied (publickey,keyboard-interactive)." in result.stderr, result.stderr


def test_fmux_openssh_names_the_servers_and_clients(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from fabric_mux import openssh, testing

    monkeypatch.setenv("FMUX_OPENSSH", str(tmp_path))
    with pytest.raises(SshdNotFound, match="holds no bin/ssh, bin/ssh-keygen, sbin/sshd"):
        testing.openssh_prefix()
    for name in ("bin/ssh", "bin/ssh-keygen", "sbin/sshd"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("#!/bin/sh\n")
        (tmp_path / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"/usr/bin:{tmp_path / 'bin'}:/bin")
    assert testing.use_openssh_from_environment() == tmp_path
    assert os.environ["PATH"] == f"{tmp_path / 'bin'}:/usr/bin:/bin"
    assert openssh.find_sshd(None) == str(tmp_path / "sbin/sshd")


def test_a_stopped_server_leaves_no_forwarded_agents_socket(
    sshd_factory: SshdFactory, tmp_path: Path
) -> None:
    """Its connections' sshd are killed, so none removes the socket of the agent it
    forwarded: the server does, with its folder (/tmp fills up otherwise)."""
    server = sshd_factory()
    agent_socket = tmp_path / "agent.sock"
    agent = subprocess.Popen(
        ["ssh-agent", "-D", "-a", str(agent_socket)], stdout=subprocess.DEVNULL
    )
    master = None
    try:
        assert wait_until(agent_socket.exists)
        env = dict(os.environ, SSH_AUTH_SOCK=str(agent_socket))
        control = tmp_path / "control"
        base = ["ssh", "-F", str(server.ssh_config), "-o", f"ControlPath={control}"]
        # A master that keeps its connection (and the forwarded agent) up.
        master = subprocess.Popen(
            [*base, "-A", "-M", "-N", server.alias], env=env, stdin=subprocess.DEVNULL
        )
        assert wait_until(control.exists)
        said = subprocess.run(
            [*base, "-A", server.alias, "echo $SSH_AUTH_SOCK"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        remote_socket = Path(said.stdout.strip())
        assert remote_socket.parent.name.startswith("ssh-") and remote_socket.exists()
        server.stop()
        assert not remote_socket.exists() and not remote_socket.parent.exists()
    finally:
        if master is not None:
            master.kill()
            master.wait()
        agent.terminate()
        agent.wait()
