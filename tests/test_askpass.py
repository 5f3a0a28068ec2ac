"""Password logins asked once per master, with the secret kept out of argv and environment."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import fabric
import pytest

from fabric_mux import MuxConnection
from fabric_mux import askpass as askpass_module
from fabric_mux.askpass import AskpassServer, PromptAnswers
from fabric_mux.exceptions import AuthenticationFailed
from fabric_mux.pytest_plugin import SshdFactory
from fabric_mux.testing import SshServer

PASSWORD_ONLY = ["BatchMode=no", "PubkeyAuthentication=no", "PreferredAuthentications=password"]


@pytest.fixture
def password_server(sshd_factory: SshdFactory) -> SshServer:
    return sshd_factory(sshd_options=["PasswordAuthentication yes"])


def password_config(server: SshServer, control_dir: Path) -> fabric.Config:
    return server.fabric_config(
        {"mux": {"control_dir": str(control_dir), "ssh_options": PASSWORD_ONLY}}
    )


def test_six_commands_two_connections_one_password_login(
    password_server: SshServer,
    control_dir: Path,
    caplog: pytest.LogCaptureFixture,
    test_password: str,
) -> None:
    caplog.set_level(logging.DEBUG, logger="fabric_mux")
    config = password_config(password_server, control_dir)
    kwargs = {"password": test_password}
    first = MuxConnection(password_server.alias, config=config, connect_kwargs=kwargs)
    second = MuxConnection(password_server.alias, config=config, connect_kwargs=kwargs)
    outputs = [c.run(f"echo {i}", hide=True).stdout for i in range(3) for c in (first, second)]
    assert outputs == ["0\n", "0\n", "1\n", "1\n", "2\n", "2\n"]
    log = password_server.log.read_text()
    assert log.count("Accepted password for") == 1
    assert password_server.logins() == 1
    # The secret is in no process's argv or environment: not the master's.
    pid = first.master_pid
    for name in ("cmdline", "environ"):
        assert test_password.encode() not in Path(f"/proc/{pid}/{name}").read_bytes()
    assert [p.name for p in control_dir.iterdir() if p.name.startswith("askpass")] == []
    assert caplog.records  # the master's argv was logged...
    assert all(
        test_password not in record.getMessage() for record in caplog.records
    )  # ...not the secret


def test_a_wrong_password_is_tried_once(password_server: SshServer, control_dir: Path) -> None:
    config = password_config(password_server, control_dir)
    c = MuxConnection(password_server.alias, config=config, connect_kwargs={"password": "not-it"})
    with pytest.raises(AuthenticationFailed, match="Permission denied"):
        c.run("true")
    assert password_server.log.read_text().count("Failed password for") == 1
    assert password_server.logins() == 0


# -- which prompt gets which secret (unit) ---------------------------------------


def answers(terminal: bool = False) -> PromptAnswers:
    return PromptAnswers(
        user="deploy",
        host="Web1.Example.com",
        identity_files=["/home/me/.ssh/id_ed25519"],
        password="pw",
        passphrase="pp",
        terminal=(lambda prompt, hint: "typed") if terminal else None,
    )


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("deploy@web1.example.com's password: ", "pw"),
        ("(deploy@web1.example.com) Password: ", "pw"),
        ("(deploy@web1.example.com) password:", "pw"),
        ("Enter passphrase for key '/home/me/.ssh/id_ed25519': ", "pp"),
        # Another host, another user, another key, or a server's own words: nothing.
        ("gateuser@bastion's password: ", None),
        ("root@web1.example.com's password: ", None),
        ("deploy@web1.example.com's password:", None),
        ("Enter passphrase for key '/tmp/other': ", None),
        ("(deploy@web1.example.com) Enter passphrase for key '/home/me/.ssh/id_ed25519': ", None),
        ("(deploy@web1.example.com) Verification code: ", None),
        ("(deploy@web1.example.com) Password and code: ", None),
        ("password: ", None),
        ("Are you sure you want to continue connecting (yes/no/[fingerprint])? ", None),
    ],
)
def test_each_secret_answers_only_its_own_whole_prompt(prompt: str, expected: str | None) -> None:
    assert answers()(prompt) == expected


def test_each_secret_is_given_once() -> None:
    given = answers()
    assert given("deploy@web1.example.com's password: ") == "pw"
    assert given("(deploy@web1.example.com) Password: ") is None


def test_other_prompts_go_to_the_terminal_when_there_is_one() -> None:
    assert answers(terminal=True)("(deploy@web1.example.com) Verification code: ") == "typed"
    assert answers(terminal=True)("gateuser@bastion's password: ") == "typed"
    assert answers(terminal=True)("deploy@web1.example.com's password: ") == "pw"


# -- who may ask (real processes, real sockets) -------------------------------------


def ask_through_helper(server: AskpassServer, prompt: str, *, depth: int = 0) -> str:
    """Run the installed helper as ssh would (``depth`` shells further down)."""
    argv = [str(Path(sys.executable).with_name("fabric-mux-askpass")), prompt]
    for _ in range(depth):
        argv = ["sh", "-c", 'exec "$@"; exit 1', "sh", *argv]
        argv = ["sh", "-c", '"$@"', "sh", *argv]  # a shell that stays, as a ProxyCommand's may
    env = {**os.environ, "FABRIC_MUX_ASKPASS_SOCKET": server.path}
    return subprocess.run(argv, env=env, capture_output=True, text=True, check=False).stdout


def test_only_a_child_of_the_master_gets_an_answer(tmp_path: Path) -> None:
    with AskpassServer(tmp_path, lambda prompt, hint: "secret") as server:
        server.expect_parent(os.getpid())  # the helper is our child, as it is ssh's
        assert ask_through_helper(server, "p: ") == "secret\n"
    with AskpassServer(tmp_path, lambda prompt, hint: "secret") as server:
        server.expect_parent(os.getppid())  # an ancestor, but not the helper's parent
        assert ask_through_helper(server, "p: ") == ""
    with AskpassServer(tmp_path, lambda prompt, hint: "secret") as server:
        server.expect_parent(os.getpid())
        assert ask_through_helper(server, "p: ", depth=1) == ""  # a grandchild: not ssh itself


def test_the_childrens_relay_serves_only_processes_below_the_master(tmp_path: Path) -> None:
    with AskpassServer(tmp_path, lambda prompt, hint: "typed", children=True) as relay:
        relay.expect_parent(os.getpid())
        assert ask_through_helper(relay, "bastion's password: ", depth=1) == "typed\n"
        assert ask_through_helper(relay, "p: ") == ""  # the master's own ssh asks the other
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        with AskpassServer(tmp_path, lambda prompt, hint: "typed", children=True) as relay:
            relay.expect_parent(stranger.pid)  # the helper does not descend from it
            assert ask_through_helper(relay, "p: ", depth=1) == ""
    finally:
        stranger.kill()
        stranger.wait()


def test_a_new_attempt_may_give_each_secret_once_more() -> None:
    first = answers()
    assert first("deploy@web1.example.com's password: ") == "pw"
    assert first("deploy@web1.example.com's password: ") is None
    assert first.renewed()("deploy@web1.example.com's password: ") == "pw"


def test_what_was_given_and_declined_is_told(tmp_path: Path) -> None:
    given = answers()
    given("Enter passphrase for key '/home/me/.ssh/id_ed25519': ")
    given("(deploy@web1.example.com) Verification code: ")
    note = given.note()
    assert "key passphrase from connect_kwargs was given and refused" in note
    assert "'(deploy@web1.example.com) Verification code:'" in note


def test_an_asker_that_says_nothing_does_not_hold_up_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(askpass_module, "_READ_TIMEOUT", 0.2)
    with AskpassServer(tmp_path, lambda prompt, hint: "secret") as server:
        server.expect_parent(os.getpid())
        with socket.socket(socket.AF_UNIX) as silent:
            silent.connect(server.path)
            assert ask_through_helper(server, "p: ") == "secret\n"


def test_a_proxy_commands_ssh_keeps_the_users_own_askpass(
    sshd_factory: SshdFactory,
    control_dir: Path,
    test_password: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The bastion is answered through the user's own askpass (no terminal to
    # relay to), the target through the password given to Fabric.
    bastion = sshd_factory(aliases=("bastion",), sshd_options=["PasswordAuthentication yes"])
    target = sshd_factory(aliases=("inside",), sshd_options=["PasswordAuthentication yes"])
    theirs = tmp_path / "users-askpass"
    theirs.write_text(f"#!/bin/sh\necho '{test_password}'\n")
    theirs.chmod(0o700)
    monkeypatch.setenv("SSH_ASKPASS", str(theirs))
    monkeypatch.setenv("SSH_ASKPASS_REQUIRE", "force")
    monkeypatch.setenv("DISPLAY", ":0")  # how ssh before 8.4 is told to use an askpass
    inner = " ".join(f"-o {option}" for option in PASSWORD_ONLY)
    target.ssh_config.write_text(
        f"Host inside\n    ProxyCommand ssh -F {bastion.ssh_config} {inner} -W %h:%p bastion\n"
        + target.ssh_config.read_text()
    )
    c = MuxConnection(
        "inside",
        config=password_config(target, control_dir),
        connect_kwargs={"password": test_password},
    )
    assert c.run("echo in", hide=True).stdout == "in\n"
    assert (bastion.logins(), target.logins()) == (1, 1)


def test_the_childrens_shell_loads_nothing_but_itself() -> None:
    # ssh starts it for every Match exec, ProxyCommand and LocalCommand: the
    # askpass module's sockets, peer checks and logging would cost ~50 ms each time.
    probe = (
        "import sys, fabric_mux.childshell; "
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('fabric_mux') "
        "or m in ('socket', 'logging', 'ctypes', 'subprocess', 'secrets', 'termios'))))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.split()
    assert loaded == ["fabric_mux", "fabric_mux.childshell"]


def test_the_childrens_shell_says_what_it_is_and_runs_commands_as_before() -> None:
    program = str(Path(sys.executable).with_name("fabric-mux-shell"))
    env = {"PATH": os.environ["PATH"], "FABRIC_MUX_SHELL": "/bin/sh", "SSH_ASKPASS": "ours"}
    helped = subprocess.run([program, "--help"], capture_output=True, text=True, check=False)
    assert (helped.returncode, helped.stderr) == (0, "")
    assert helped.stdout.startswith("usage: fabric-mux-shell -c COMMAND\n")
    # What ssh runs: the user's shell, with the command as it is (--help too).
    ran = subprocess.run(
        [program, "-c", 'echo "$0" "$1" --help "${SSH_ASKPASS-none}"', "x", "one"],
        capture_output=True, text=True, check=False, env=env,
    )  # fmt: skip
    assert (ran.returncode, ran.stdout, ran.stderr) == (0, "x one --help none\n", "")


@pytest.mark.parametrize(
    ("shell", "code", "said"),
    [
        ("bash", 127, "FABRIC_MUX_SHELL (your SHELL) is 'bash', not a full path: set SHELL to one"),
        ("/nonexistent/zsh", 127, "cannot run your shell /nonexistent/zsh (FABRIC_MUX_SHELL): "
         "No such file or directory"),
        ("TMP/plain.txt", 126, "cannot run your shell TMP/plain.txt (FABRIC_MUX_SHELL): "
         "Permission denied"),
    ],
)  # fmt: skip
def test_the_childrens_shell_that_cannot_run_its_shell_says_so_in_one_line(
    shell: str, code: int, said: str, tmp_path: Path
) -> None:
    program = str(Path(sys.executable).with_name("fabric-mux-shell"))
    (tmp_path / "plain.txt").write_text("not a program\n")  # 0644: nobody may run it
    shell, said = shell.replace("TMP", str(tmp_path)), said.replace("TMP", str(tmp_path))
    env = {"PATH": os.environ["PATH"], "FABRIC_MUX_SHELL": shell}
    ran = subprocess.run(
        [program, "-c", "true"], capture_output=True, text=True, check=False, env=env, cwd=tmp_path
    )
    assert (ran.returncode, ran.stdout, ran.stderr) == (code, "", f"fabric-mux-shell: {said}\n")
