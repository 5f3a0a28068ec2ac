"""Secrets with an ssh before 8.5, whose prompts a server can imitate, and before 8.4,
which ignores ``SSH_ASKPASS_REQUIRE``.

The suite runs on every OpenSSH of the matrix (``FMUX_OPENSSH``); these tests
also make the master take the old ways with any ssh (``ssh_version`` says 8.0),
so that the private agent is tried on every run, not only on old builds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import fabric
import pytest
from test_trust import assert_nothing_answers, encrypted_key
from waiting import process_gone, wait_until

from fabric_mux import MuxConnection, login
from fabric_mux.askpass import PromptAnswers
from fabric_mux.childshell import ENV_DISPLAY, OUR_DISPLAY, helper_environment
from fabric_mux.exceptions import AuthenticationFailed, SecretWithheld
from fabric_mux.resolve import KEPT
from fabric_mux.testing import SshServer
from fabric_mux.version import SshVersion, parse_version

OLD = SshVersion(8, 0, "OpenSSH_8.0p1 (as the test says)")


@pytest.fixture
def old_ssh(monkeypatch: pytest.MonkeyPatch) -> None:
    """The master takes ssh for 8.0: no forced askpass, no marked server prompts."""
    monkeypatch.setattr(login, "ssh_version", lambda ssh: OLD)


def agents_under(folder: Path) -> list[int]:
    """ssh-agent processes whose socket is in ``folder``."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                argv = Path(f"/proc/{name}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv[0].endswith(b"ssh-agent") and any(
                word.startswith(str(folder).encode()) for word in argv
            ):
                found.append(int(name))
    return found


def locked_key_server(
    sshd: SshServer, control_dir: Path, tmp_path: Path, keep_client_key: bool = False
) -> fabric.Config:
    key = encrypted_key(tmp_path, "key-passphrase")
    authorized = sshd.directory / "authorized_keys"
    kept = authorized.read_text() if keep_client_key else ""
    authorized.write_text(kept + key.with_suffix(".pub").read_text())
    # The test servers' ssh_config says BatchMode, which asks for no passphrase.
    options = {"control_dir": str(control_dir), "ssh_options": ["BatchMode=no"]}
    return sshd.fabric_config({"mux": options})


# -- which prompt gets which secret (unit) ---------------------------------------------


def answers() -> PromptAnswers:
    return PromptAnswers(
        user="deploy",
        host="web1",
        identity_files=["/home/me/.ssh/id_ed25519"],
        password="pw",
        passphrase="pp",
    )


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        # The password: the server that asks is the one it is for (see the README).
        ("deploy@web1's password: ", "pw"),
        ("Password: ", "pw"),
        ("password:", "pw"),
        # Any of these may be the server's own words: no passphrase, ever.
        ("Enter passphrase for key '/home/me/.ssh/id_ed25519': ", None),
        ("Enter passphrase for /home/me/.ssh/id_ed25519: ", None),
        ("root@web1's password: ", None),
        ("(deploy@web1) Password: ", None),
        ("Verification code: ", None),
    ],
)
def test_an_ssh_that_does_not_mark_server_prompts_gets_no_passphrase(
    prompt: str, expected: str | None
) -> None:
    assert answers().for_ssh(marks_server_prompts=False)(prompt) == expected


def test_ssh_add_gets_the_passphrase_for_the_connections_keys_only() -> None:
    given = answers().for_ssh_add()
    assert given("Enter passphrase for key '/home/me/.ssh/id_ed25519': ") is None
    assert given("deploy@web1's password: ") is None
    assert given("Enter passphrase for /tmp/other: ") is None
    assert given("Enter passphrase for /home/me/.ssh/id_ed25519: ") == "pp"
    assert given("Bad passphrase, try again for /home/me/.ssh/id_ed25519: ") is None


def test_a_passphrase_given_to_ssh_add_is_not_given_again() -> None:
    first = answers()
    assert first.for_ssh_add()("Enter passphrase for /home/me/.ssh/id_ed25519: ") == "pp"
    assert first.for_ssh_add()("Enter passphrase for /home/me/.ssh/id_ed25519: ") is None
    assert "passphrase from connect_kwargs was given" in first.note()


# -- the fishing server gets nothing ----------------------------------------------------


@pytest.mark.parametrize(
    "question",
    [
        "Enter passphrase for key '{key}': ",  # ssh's own words
        "Enter passphrase for {key}: ",  # ssh-add's
        "root@127.0.0.1's password: ",  # another account's password prompt
        "Passphrase: ",
    ],
)
def test_a_fishing_server_gets_nothing_from_an_old_ssh(
    old_ssh: None, control_dir: Path, tmp_path: Path, question: str
) -> None:
    key = encrypted_key(tmp_path, "key-passphrase")
    assert_nothing_answers(question.format(key=key), control_dir, tmp_path, key)
    assert agents_under(control_dir) == []


# -- the passphrase through a private agent ----------------------------------------------


def test_the_passphrase_logs_in_once_through_a_private_agent_that_ends_after(
    old_ssh: None, sshd: SshServer, control_dir: Path, tmp_path: Path
) -> None:
    config = locked_key_server(sshd, control_dir, tmp_path)
    key = str(tmp_path / "locked_key")
    c = MuxConnection(
        sshd.alias,
        config=config,
        connect_kwargs={"key_filename": [key], "passphrase": "key-passphrase"},
    )
    assert c.run("echo unlocked", hide=True).stdout == "unlocked\n"
    assert c.run("echo again", hide=True).stdout == "again\n"
    assert sshd.logins() == 1
    argv = Path(f"/proc/{c.master_pid}/cmdline").read_bytes().split(b"\0")
    assert any(word.startswith(b"IdentityAgent=") for word in argv)  # the agent was used
    assert agents_under(control_dir) == []  # and is gone
    # Nothing of the start stays but the master's socket (and kept ssh -G answers).
    assert sorted(p.name for p in control_dir.iterdir() if not p.is_socket()) in ([], [KEPT])
    assert [p.name for p in control_dir.iterdir() if p.name.startswith(("agent", "askpass"))] == []


def test_a_wrong_passphrase_for_the_agent_says_so(
    old_ssh: None, sshd: SshServer, control_dir: Path, tmp_path: Path
) -> None:
    config = locked_key_server(sshd, control_dir, tmp_path)
    kwargs = {"key_filename": [str(tmp_path / "locked_key")], "passphrase": "wrong"}
    with pytest.raises(AuthenticationFailed, match="passphrase from connect_kwargs was given"):
        MuxConnection(sshd.alias, config=config, connect_kwargs=kwargs).run("true")
    assert sshd.logins() == 0
    assert agents_under(control_dir) == []


def test_forward_agent_with_a_passphrase_is_refused_on_an_old_ssh(
    old_ssh: None, sshd: SshServer, control_dir: Path, tmp_path: Path
) -> None:
    config = locked_key_server(sshd, control_dir, tmp_path)
    kwargs = {"key_filename": [str(tmp_path / "locked_key")], "passphrase": "key-passphrase"}
    c = MuxConnection(sshd.alias, config=config, connect_kwargs=kwargs, forward_agent=True)
    with pytest.raises(SecretWithheld, match=r"ForwardAgent on: .* is OpenSSH 8\.0"):
        c.run("true")
    assert sshd.logins() == 0
    assert agents_under(control_dir) == []


def test_a_killed_process_leaves_no_agent_behind(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    folder.mkdir(mode=0o700)
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        from pathlib import Path
        from fabric_mux.agent import private_agent
        from fabric_mux.askpass import PromptAnswers
        answers = PromptAnswers(user="u", host="h", passphrase="p").for_ssh_add()
        with private_agent("ssh", Path({str(folder)!r}), [], answers, "h") as path:
            print(path, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True
    )
    assert done.returncode == -signal.SIGKILL
    agent_socket = done.stdout.strip()
    assert agent_socket.startswith(str(folder))
    agents = agents_under(folder)
    assert wait_until(lambda: all(process_gone(pid) for pid in agents), 15)
    assert wait_until(lambda: not os.path.exists(agent_socket), 15)


# -- ssh before 8.4: askpass only with DISPLAY -----------------------------------------


def test_our_display_never_reaches_the_masters_children(
    old_ssh: None,
    monkeypatch: pytest.MonkeyPatch,
    sshd: SshServer,
    control_dir: Path,
    tmp_path: Path,
) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    seen = tmp_path / "proxy_environment"
    bastion_config = tmp_path / "bastion_config"
    bastion_config.write_text(sshd.ssh_config.read_text())
    locked_key_server(sshd, control_dir, tmp_path, keep_client_key=True)  # the hop's key
    proxy = f"sh -c 'env > {seen}; exec ssh -F {bastion_config} -W %h:%p {sshd.alias}'"
    c = MuxConnection(
        sshd.alias,
        config=sshd.fabric_config(
            {
                "mux": {
                    "control_dir": str(control_dir),
                    "ssh_options": ["BatchMode=no", f"ProxyCommand={proxy}"],
                }
            }
        ),
        connect_kwargs={
            "key_filename": [str(tmp_path / "locked_key")],
            "passphrase": "key-passphrase",
        },
    )
    assert c.run("echo through", hide=True).stdout == "through\n"
    environment = seen.read_text()
    assert "DISPLAY=" not in environment and OUR_DISPLAY not in environment
    assert "FABRIC_MUX" not in environment and "ASKPASS" not in environment


def test_the_ssh_under_test_parses() -> None:
    said = subprocess.run(["ssh", "-V"], capture_output=True, text=True, check=True).stderr
    assert parse_version(said) is not None


def test_the_users_display_is_kept_and_ours_set_only_without_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DISPLAY", "localhost:10.0")
    kept = helper_environment("/run/x", display=True)
    assert "DISPLAY" not in kept and ENV_DISPLAY not in kept  # the user's goes through
    monkeypatch.delenv("DISPLAY")
    ours = helper_environment("/run/x", display=True)
    assert (ours["DISPLAY"], ours[ENV_DISPLAY]) == (OUR_DISPLAY, "1")
    assert "DISPLAY" not in helper_environment("/run/x", display=False)  # 8.4 on: not needed
