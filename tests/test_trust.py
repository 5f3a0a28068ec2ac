"""Sharing a login never shares more than OpenSSH would give each connection on its own.

Each case is an attack or a careless setup, tried against real servers: aliases
with other host-key rules, a ProxyCommand's ssh, a server asking for the key's
passphrase, a master planted by another user, and what the suite leaves behind.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import fabric
import pytest
from fakes import FakeSshServer, fake_ssh_server
from test_user_masters import master_at, prepend

from devtools.accounts import TEST_USER, remove_account
from fabric_mux import MuxConnection, startlock
from fabric_mux.exceptions import (
    ConfigChanged,
    ControlDirUnsafe,
    HostKeyFailed,
    MasterNotOurs,
    MasterStartFailed,
    StartWaitTimedOut,
)
from fabric_mux.pytest_plugin import SshdFactory
from fabric_mux.testing import SshServer

# -- 1. host-key rules are part of what a master is ----------------------------------


@pytest.fixture
def lax_and_strict(sshd: SshServer, control_dir: Path, tmp_path: Path) -> fabric.Config:
    """Two aliases of one server: ``lax`` checks no host key, ``strict`` knows a wrong one."""
    wrong = tmp_path / "wrong"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong)], check=True)
    strict_known = tmp_path / "strict_known_hosts"
    strict_known.write_text(f"[127.0.0.1]:{sshd.port} {(tmp_path / 'wrong.pub').read_text()}")
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text(
        textwrap.dedent(
            f"""\
            Host lax strict
                HostName 127.0.0.1
                Port {sshd.port}
                User {sshd.user}
                IdentityFile {sshd.client_key}
                IdentitiesOnly yes
                GlobalKnownHostsFile /dev/null
                BatchMode yes
            Host lax
                StrictHostKeyChecking no
                UserKnownHostsFile /dev/null
            Host strict
                StrictHostKeyChecking yes
                UserKnownHostsFile {strict_known}
            """
        )
    )
    return fabric.Config(
        runtime_ssh_path=str(ssh_config), overrides={"mux": {"control_dir": str(control_dir)}}
    )


def master_destination(c: MuxConnection) -> str:
    """The host argument the running master was started with."""
    argv = Path(f"/proc/{c.master_pid}/cmdline").read_bytes().split(b"\0")
    return argv[-2].decode()


def test_lax_then_strict_never_lets_strict_in(
    sshd: SshServer, lax_and_strict: fabric.Config
) -> None:
    lax = MuxConnection("lax", config=lax_and_strict)
    assert lax.run("echo lax", hide=True).stdout == "lax\n"
    strict = MuxConnection("strict", config=lax_and_strict)
    with pytest.raises(HostKeyFailed, match="REMOTE HOST IDENTIFICATION HAS CHANGED"):
        strict.run("echo strict", hide=True)
    assert lax.run("echo lax again", hide=True).stdout == "lax again\n"
    assert master_destination(lax) == "lax"
    assert sshd.logins() == 1


def test_strict_then_lax_each_under_its_own_rules(
    sshd: SshServer, lax_and_strict: fabric.Config
) -> None:
    strict = MuxConnection("strict", config=lax_and_strict)
    with pytest.raises(HostKeyFailed):
        strict.run("true")
    lax = MuxConnection("lax", config=lax_and_strict)
    assert lax.run("echo lax", hide=True).stdout == "lax\n"
    assert master_destination(lax) == "lax"  # not a master started for "strict"
    with pytest.raises(HostKeyFailed):
        MuxConnection("strict", config=lax_and_strict).run("true")
    assert sshd.logins() == 1


def test_a_lax_master_of_another_process_does_not_serve_strict(
    sshd: SshServer, lax_and_strict: fabric.Config, control_dir: Path
) -> None:
    script = textwrap.dedent(
        f"""
        import fabric
        from fabric_mux import MuxConnection
        config = fabric.Config(runtime_ssh_path={lax_and_strict._runtime_ssh_path!r},
                               overrides={{"mux": {{"control_dir": {str(control_dir)!r}}}}})
        MuxConnection("lax", config=config).run("true")
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, start_new_session=True)
    assert sshd.logins() == 1
    with pytest.raises(HostKeyFailed):
        MuxConnection("strict", config=lax_and_strict).run("true")
    assert sshd.logins() == 1


# -- 2. and 3. a secret answers its own prompt only -----------------------------------


def proxied_config(
    sshd: SshServer, control_dir: Path, folder: Path, proxy_command: str
) -> fabric.Config:
    ssh_config = folder / "ssh_config"
    ssh_config.write_text(
        textwrap.dedent(
            f"""\
            Host target
                HostName 127.0.0.1
                Port {sshd.port}
                User {sshd.user}
                ProxyCommand {proxy_command}
                IdentitiesOnly yes
                IdentityFile {sshd.client_key}
                UserKnownHostsFile {sshd.known_hosts}
                GlobalKnownHostsFile /dev/null
                StrictHostKeyChecking yes
                PubkeyAuthentication no
                PreferredAuthentications password
            """
        )
    )
    return fabric.Config(
        runtime_ssh_path=str(ssh_config), overrides={"mux": {"control_dir": str(control_dir)}}
    )


def test_the_targets_password_never_reaches_a_proxycommands_host(
    sshd: SshServer, control_dir: Path, tmp_path: Path
) -> None:
    with fake_ssh_server(method="password") as bastion:
        known = tmp_path / "bastion_known_hosts"
        known.write_text(bastion.known_hosts_line())
        proxy = (
            f"ssh -F /dev/null -o UserKnownHostsFile={known} -o StrictHostKeyChecking=yes "
            f"-o PubkeyAuthentication=no -p {bastion.port} gateuser@127.0.0.1 -W %h:%p"
        )
        config = proxied_config(sshd, control_dir, tmp_path, proxy)
        c = MuxConnection("target", config=config, connect_kwargs={"password": "target-secret"})
        with pytest.raises(MasterStartFailed):
            c.run("true")
    assert all("target-secret" not in answer for _, _, answer in bastion.received)
    assert sshd.logins() == 0


def test_a_proxycommand_never_sees_the_askpass_variables(
    sshd_factory: SshdFactory, control_dir: Path, tmp_path: Path, test_password: str
) -> None:
    sshd = sshd_factory(sshd_options=["PasswordAuthentication yes"])
    seen = tmp_path / "proxy_environment"
    bastion_config = tmp_path / "bastion_config"
    bastion_config.write_text(sshd.ssh_config.read_text())
    # The "bastion" is the server itself: its key login works, and -W reaches the target.
    # ssh runs it as "$SHELL -c 'exec COMMAND'".
    proxy = f"sh -c 'env > {seen}; exec ssh -F {bastion_config} -W %h:%p {sshd.alias}'"
    config = proxied_config(sshd, control_dir, tmp_path, proxy)
    c = MuxConnection("target", config=config, connect_kwargs={"password": test_password})
    assert c.run("echo through", hide=True).stdout == "through\n"
    environment = dict(line.split("=", 1) for line in seen.read_text().splitlines() if "=" in line)
    assert [name for name in environment if "ASKPASS" in name or "FABRIC_MUX" in name] == []
    assert environment.get("SHELL") == os.environ.get("SHELL")  # the user's own shell again
    assert sshd.log.read_text().count("Accepted password for") == 1


def keyboard_interactive_config(
    fake: FakeSshServer, control_dir: Path, folder: Path, key: Path
) -> fabric.Config:
    known = folder / "fake_known_hosts"
    known.write_text(fake.known_hosts_line())
    ssh_config = folder / "ssh_config"
    ssh_config.write_text(
        textwrap.dedent(
            f"""\
            Host fake
                HostName 127.0.0.1
                Port {fake.port}
                User victim
                IdentitiesOnly yes
                IdentityFile {key}
                UserKnownHostsFile {known}
                GlobalKnownHostsFile /dev/null
                StrictHostKeyChecking yes
            """
        )
    )
    return fabric.Config(
        runtime_ssh_path=str(ssh_config), overrides={"mux": {"control_dir": str(control_dir)}}
    )


def encrypted_key(folder: Path, passphrase: str) -> Path:
    key = folder / "locked_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-f", str(key)], check=True
    )
    return key


def assert_nothing_answers(question: str, control_dir: Path, folder: Path, key: Path) -> None:
    """A server that asks ``question`` (keyboard-interactive), from a connection given
    both a passphrase for ``key`` and a password, gets an empty answer every time."""
    with fake_ssh_server(method="keyboard-interactive", question=question) as fake:
        config = keyboard_interactive_config(fake, control_dir, folder, key)
        c = MuxConnection(
            "fake",
            config=config,
            connect_kwargs={"passphrase": "key-passphrase", "password": "the-password"},
        )
        with pytest.raises(MasterStartFailed):
            c.run("true")
    assert fake.received, "the fake server asked nothing"
    assert all(answer == "" for _, _, answer in fake.received), fake.received


def test_a_server_asking_for_the_passphrase_gets_nothing(control_dir: Path, tmp_path: Path) -> None:
    key = encrypted_key(tmp_path, "key-passphrase")
    question = f"Enter passphrase for key '{key}': "
    assert_nothing_answers(question, control_dir, tmp_path, key)


def test_a_keyboard_interactive_password_prompt_gets_the_password_once(
    control_dir: Path, tmp_path: Path
) -> None:
    key = encrypted_key(tmp_path, "key-passphrase")
    with fake_ssh_server(method="keyboard-interactive", question="Password: ") as fake:
        config = keyboard_interactive_config(fake, control_dir, tmp_path, key)
        c = MuxConnection("fake", config=config, connect_kwargs={"password": "the-password"})
        with pytest.raises(MasterStartFailed):
            c.run("true")
    answers = [answer for _, _, answer in fake.received]
    assert answers.count("the-password") == 1, answers  # asked again: declined


def test_the_passphrase_unlocks_the_connections_own_key(
    sshd: SshServer, control_dir: Path, tmp_path: Path
) -> None:
    key = encrypted_key(tmp_path, "key-passphrase")
    (sshd.directory / "authorized_keys").write_text(key.with_suffix(".pub").read_text())
    # The test servers' ssh_config says BatchMode, which asks for no passphrase.
    options = {"control_dir": str(control_dir), "ssh_options": ["BatchMode=no"]}
    config = sshd.fabric_config({"mux": options})
    c = MuxConnection(
        sshd.alias,
        config=config,
        connect_kwargs={"key_filename": [str(key)], "passphrase": "key-passphrase"},
    )
    assert c.run("echo unlocked", hide=True).stdout == "unlocked\n"
    assert sshd.logins() == 1


# -- 4. only our own masters -----------------------------------------------------------

# Named after the test account, so that two runs on one machine (FMUX_TEST_USER) stay apart.
OTHER_USER = f"{TEST_USER}o"

FAKE_MASTER = textwrap.dedent(
    """
    import socket, struct, sys
    path, log = sys.argv[1], sys.argv[2]
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(8)
    print("listening", flush=True)
    while True:
        conn, _ = listener.accept()
        conn.settimeout(2)
        try:
            conn.sendall(struct.pack(">III", 8, 1, 4))  # MUX_MSG_HELLO, version 4
            while data := conn.recv(65536):
                with open(log, "ab") as out:
                    out.write(data)
        except OSError:
            pass
        conn.close()
    """
)


@pytest.fixture
def other_user() -> Iterator[str]:
    """A second local account, removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("only root can make a second account to plant a master")
    subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", OTHER_USER], check=False)
    try:
        yield OTHER_USER
    finally:
        remove_account(OTHER_USER)


@pytest.fixture
def planted_master(other_user: str) -> Iterator[tuple[Path, Path]]:
    """A fake master run by :func:`other_user`: (its socket, the log of what it was sent)."""
    folder = Path(tempfile.mkdtemp(prefix="fmo-", dir="/tmp"))
    account = pwd.getpwnam(other_user)
    os.chown(folder, account.pw_uid, account.pw_gid)
    socket_path, log = folder / "master", folder / "received"
    # Debian's own Python: the other account may not reach a virtualenv's.
    python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    fake = subprocess.Popen(
        [python, "-c", FAKE_MASTER, str(socket_path), str(log)],
        user=account.pw_uid,
        group=account.pw_gid,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert fake.stdout is not None and fake.stdout.readline() == b"listening\n"
        yield socket_path, log
    finally:
        fake.kill()
        fake.wait()
        shutil.rmtree(folder, ignore_errors=True)


def test_a_master_of_another_user_gets_nothing(
    sshd: SshServer, config: fabric.Config, planted_master: tuple[Path, Path], test_password: str
) -> None:
    c = MuxConnection(sshd.alias, config=config)
    c.run("true")
    real_master = c.master_pid
    assert real_master is not None
    fake_socket, received = planted_master
    # What a user who could write above the control folder did: swap the socket.
    os.rename(fake_socket, str(c.control_path))
    try:
        with pytest.raises(MasterNotOurs, match=rf"{c.control_path} belongs to {OTHER_USER}"):
            c.sudo("whoami", password=test_password, hide=True)
        with pytest.raises(MasterNotOurs):
            MuxConnection(sshd.alias, config=config).run("true")
    finally:
        os.kill(real_master, 9)
    assert not received.exists() or received.read_bytes() == b""
    assert os.path.exists(str(c.control_path))  # not quietly replaced either


@pytest.mark.parametrize("mode", [0o777, 0o775])
def test_a_control_folder_below_a_writable_folder_is_refused(
    sshd: SshServer, tmp_path: Path, mode: int
) -> None:
    shared = Path(tempfile.mkdtemp(prefix="fms-", dir="/tmp"))
    try:
        shared.chmod(mode)
        config = sshd.fabric_config({"mux": {"control_dir": str(shared / "mux")}})
        with pytest.raises(ControlDirUnsafe, match=rf"{shared} has mode 0{mode:o}: others can"):
            MuxConnection(sshd.alias, config=config).run("true")
        assert list(shared.iterdir()) == []  # nothing made below it
    finally:
        shutil.rmtree(shared)
    assert sshd.logins() == 0


def test_a_control_folder_below_another_users_folder_is_refused(
    sshd: SshServer, other_user: str
) -> None:
    theirs = Path(tempfile.mkdtemp(prefix="fmt-", dir="/tmp"))
    try:
        os.chown(theirs, pwd.getpwnam(other_user).pw_uid, -1)
        config = sshd.fabric_config({"mux": {"control_dir": str(theirs / "mux")}})
        with pytest.raises(ControlDirUnsafe, match=rf"{theirs} belongs to {OTHER_USER}"):
            MuxConnection(sshd.alias, config=config).run("true")
    finally:
        shutil.rmtree(theirs)


# -- 5. the suite leaves no door open ---------------------------------------------------


def test_a_run_of_the_suite_leaves_no_password_and_no_sudo_rule() -> None:
    if os.geteuid() != 0:
        pytest.skip("only a run as root makes accounts")
    name = f"{TEST_USER}h"
    env = {**os.environ, "FMUX_TEST_USER": name, "CI": "1"}
    try:
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
             "tests/test_connection.py::test_sudo_with_a_password"],
            cwd=Path(__file__).parent.parent,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            start_new_session=True,
        )  # fmt: skip
        assert run.returncode == 0, run.stdout + run.stderr
        assert "1 passed" in run.stdout
        assert shadow_hash(name) in ("*", "!", "!*")
        assert not any(Path("/etc/sudoers.d").glob(f"*{name}*"))
    finally:
        remove_account(name)


def test_the_cli_lists_another_users_master_and_leaves_it_alone(
    control_dir: Path, planted_master: tuple[Path, Path]
) -> None:
    fake_socket, received = planted_master
    planted = control_dir / "0123456789abcdef0123"
    os.rename(fake_socket, planted)
    listing = subprocess.run(
        [str(Path(sys.executable).with_name("fabric-mux")), "--control-dir", str(control_dir),
         "list"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "other" in listing.stdout and "not ours: uid" in listing.stdout
    stop = subprocess.run(
        [str(Path(sys.executable).with_name("fabric-mux")), "--control-dir", str(control_dir),
         "stop", "--all"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "stopped 0 master(s)" in stop.stdout
    assert planted.exists()
    assert not received.exists() or received.read_bytes() == b""


def test_a_stale_socket_of_another_user_is_neither_used_nor_replaced(
    sshd: SshServer, config: fabric.Config, other_user: str
) -> None:
    path = MuxConnection(sshd.alias, config=config).route().master().control_path
    with socket.socket(socket.AF_UNIX) as planted:
        planted.bind(path)  # bound, never listening: a dead master's socket
    os.chown(path, pwd.getpwnam(other_user).pw_uid, -1)
    with pytest.raises(MasterNotOurs, match=f"belongs to {OTHER_USER}"):
        MuxConnection(sshd.alias, config=config).run("true")
    assert os.path.exists(path)
    assert sshd.logins() == 0


# -- what the review found ---------------------------------------------------------------


def test_a_match_exec_run_by_the_master_never_sees_the_askpass_variables(
    sshd_factory: SshdFactory, control_dir: Path, tmp_path: Path, test_password: str
) -> None:
    sshd = sshd_factory(sshd_options=["PasswordAuthentication yes"])
    seen = tmp_path / "match_environment"
    # Included: only OpenSSH reads it (paramiko, reading ssh_config for Fabric,
    # would run the command itself, through invoke).
    (tmp_path / "match.conf").write_text(
        f'Match exec "env > {seen}; true"\n'
        "    PubkeyAuthentication no\n"
        "    PreferredAuthentications password\n"
    )
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text(
        f"Include {tmp_path / 'match.conf'}\n"
        + sshd.ssh_config.read_text().replace("BatchMode yes", "BatchMode no")
    )
    config = fabric.Config(
        runtime_ssh_path=str(ssh_config), overrides={"mux": {"control_dir": str(control_dir)}}
    )
    c = MuxConnection(sshd.alias, config=config, connect_kwargs={"password": test_password})
    assert c.run("echo in", hide=True).stdout == "in\n"
    environment = seen.read_text()  # written last by the master's own run of it
    assert "ASKPASS" not in environment and "FABRIC_MUX" not in environment


def test_a_changed_ssh_config_is_read_again_and_never_shares_a_master(
    sshd: SshServer, lax_and_strict: fabric.Config
) -> None:
    ssh_config = Path(lax_and_strict._runtime_ssh_path)
    strict_text = ssh_config.read_text()
    # The same file, but "strict" now gets lax's rules.
    lax_text = strict_text.replace("Host lax\n", "Host lax strict\n").replace(
        "Host strict\n", "Host nobody\n"
    )
    master = MuxConnection("strict", config=lax_and_strict).route().master()  # named strict
    ssh_config.write_text(lax_text)
    with pytest.raises(ConfigChanged, match="changed while connecting"):
        master.ensure("600")  # it would read the lax file under the strict name
    assert sshd.logins() == 0
    lax_now = MuxConnection("strict", config=lax_and_strict)
    assert lax_now.run("echo lax", hide=True).stdout == "lax\n"  # read again: lax
    ssh_config.write_text(strict_text)
    with pytest.raises(HostKeyFailed):
        MuxConnection("strict", config=lax_and_strict).run("true")
    assert sshd.logins() == 1


def test_a_link_of_another_user_above_the_control_folder_is_refused(
    sshd: SshServer, other_user: str, control_dir: Path
) -> None:
    link = Path(tempfile.mkdtemp(prefix="fml-", dir="/tmp")) / "link"
    try:
        link.symlink_to(control_dir)
        os.lchown(link, pwd.getpwnam(other_user).pw_uid, -1)
        config = sshd.fabric_config({"mux": {"control_dir": str(link / "mux")}})
        with pytest.raises(
            ControlDirUnsafe, match=rf"{link} is a link that {OTHER_USER} \(uid \d+\) owns"
        ):
            MuxConnection(sshd.alias, config=config).run("true")
        assert list(control_dir.iterdir()) == []
    finally:
        shutil.rmtree(link.parent)


def test_a_link_of_ours_is_followed_once_and_the_real_folder_used(
    sshd: SshServer, control_dir: Path
) -> None:
    link = Path(tempfile.mkdtemp(prefix="fml-", dir="/tmp")) / "link"
    try:
        link.symlink_to(control_dir)
        config = sshd.fabric_config({"mux": {"control_dir": str(link)}})
        c = MuxConnection(sshd.alias, config=config)
        c.run("true")
        assert os.path.dirname(str(c.control_path)) == str(control_dir)
    finally:
        shutil.rmtree(link.parent)


def test_a_terminated_run_takes_back_the_password_and_the_sudo_rule() -> None:
    if os.geteuid() != 0:
        pytest.skip("only root lends accounts")
    name = f"{TEST_USER}t"
    script = textwrap.dedent(
        f"""
        import time
        from devtools.accounts import lent_account
        with lent_account({name!r}, sudoer=True):
            print("lent", flush=True)
            time.sleep(60)
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script], cwd=Path(__file__).parent.parent, stdout=subprocess.PIPE
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == b"lent\n"
        assert shadow_hash(name) not in ("*", "!")  # a password, for the loan
        child.terminate()
        assert child.wait(timeout=30) != 0
        assert shadow_hash(name) == "*"
        assert not (Path("/etc/sudoers.d") / name).exists()
    finally:
        child.kill()
        child.wait()
        remove_account(name)


def shadow_hash(name: str) -> str:
    for line in Path("/etc/shadow").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return fields[1]
    raise KeyError(name)


def test_a_master_of_another_user_at_the_users_own_control_path_gets_nothing(
    sshd: SshServer, control_dir: Path, planted_master: tuple[Path, Path]
) -> None:
    # The ControlPath that the user's ssh_config names, where another account
    # answers: OpenSSH's own client would talk to it; fabric-mux refuses it.
    fake_socket, received = planted_master
    sshd.ssh_config.write_text(
        f"Host {sshd.alias}\n    ControlMaster auto\n    ControlPath {fake_socket}\n"
        + sshd.ssh_config.read_text()
    )
    config = sshd.fabric_config({"mux": {"control_dir": str(control_dir)}})
    with pytest.raises(MasterNotOurs, match=rf"{fake_socket} belongs to {OTHER_USER}"):
        MuxConnection(sshd.alias, config=config).run("true")
    assert not received.exists() or received.read_bytes() == b""
    assert fake_socket.exists()  # not removed: it is not ours to remove
    assert sshd.logins() == 0


# -- 5. locks nobody else can take ------------------------------------------------------

#: Takes a lock file's flock, writes its pid there, says so, and holds it until killed.
LOCK_HOLDER = textwrap.dedent(
    """
    import fcntl, os, sys
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, str(os.getpid()).encode())
    print("locked", flush=True)
    sys.stdin.read()
    """
)


def hold_lock(path: str, uid: int | None = None) -> subprocess.Popen[bytes]:
    """A process (of ``uid``) holding the flock of ``path``."""
    python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    holder = subprocess.Popen(
        [python, "-c", LOCK_HOLDER, path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        user=uid,
        start_new_session=True,
    )
    assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
    return holder


def test_a_lock_another_user_holds_beside_the_users_socket_changes_nothing(
    sshd_factory: SshdFactory, other_user: str, control_dir: Path
) -> None:
    """The user's ControlPath is in a folder everyone can write (as /tmp): another
    user who makes and holds ``PATH.lock`` there neither fails nor holds up a start."""
    folder = Path(tempfile.mkdtemp(prefix="fmt-", dir="/tmp"))
    folder.chmod(0o1777)
    server = sshd_factory()
    prepend(
        server.ssh_config,
        f"Host *\n    ControlMaster auto\n    ControlPath {folder}/cm-%C\n    ControlPersist 60\n",
    )
    config = server.fabric_config({"mux": {"control_dir": str(control_dir)}})
    path = MuxConnection(server.alias, config=config).route().master().control_path
    holder = hold_lock(path + ".lock", pwd.getpwnam(other_user).pw_uid)
    try:
        outcome: list[str] = []
        worker = threading.Thread(
            target=lambda: outcome.append(
                MuxConnection(server.alias, config=config).run("echo hi", hide=True).stdout
            ),
            daemon=True,
        )
        worker.start()
        worker.join(60)
        assert outcome == ["hi\n"]
        assert server.logins() == 1
        assert master_at(Path(path), server)
        # Nothing of ours beside the user's socket.
        name = Path(path).name
        assert sorted(p.name for p in folder.iterdir()) == [name, f"{name}.lock"]
    finally:
        holder.kill()
        holder.wait()
        subprocess.run(["ssh", "-S", path, "-O", "exit", "x"], check=False, capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def test_a_start_waits_for_another_process_start_a_bounded_time(
    sshd: SshServer, config: fabric.Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    lock = MuxConnection(sshd.alias, config=config).route().master().lock_path()
    holder = hold_lock(lock)
    monkeypatch.setattr(startlock, "LOCK_WAIT", 0.5)
    try:
        with pytest.raises(StartWaitTimedOut, match=rf"process {holder.pid}, which is starting"):
            MuxConnection(sshd.alias, config=config).run("true")
        assert sshd.logins() == 0
    finally:
        holder.kill()
        holder.wait()
    MuxConnection(sshd.alias, config=config).run("true")
    assert sshd.logins() == 1
