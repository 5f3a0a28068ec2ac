"""A private ``ssh-agent`` that holds a connection's keys while its master logs in.

For ssh before 8.5, whose prompts a server can imitate (see
:mod:`fabric_mux.askpass`): the key passphrase from ``connect_kwargs`` goes
to ``ssh-add``, which asks our askpass helper locally and talks to no
server; the master then uses the keys through ``IdentityAgent``. The agent
lives in the private control folder and ends as soon as the master has
logged in (or failed to): nothing holds the unlocked keys after that.

The agent runs :mod:`fabric_mux.agentkeeper` as its command (``ssh-agent -a
SOCKET COMMAND``): the keeper reads its stdin until we close it, or until this
process dies, then ends the agent and waits for it; and the agent ends by
itself within 10 s of the keeper's end. So not even a killed process leaves
an agent behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from .answers import PromptAnswers
from .askpass import AskpassServer
from .childshell import helper_environment
from .exceptions import MasterStartFailed, SshNotFound
from .peers import wait_for_exit

__all__ = ["private_agent"]

log = logging.getLogger("fabric_mux")

#: Seconds to wait for the agent to start, ssh-add to finish, the keeper to end.
_TIMEOUT = 30.0


def _program(ssh: str, name: str) -> str:
    """``ssh-agent`` or ``ssh-add`` of the same OpenSSH as ``ssh``, else from PATH."""
    beside = Path(ssh).with_name(name)
    if os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise SshNotFound(f"no {name} beside {ssh} or on PATH: it holds the key for ssh")
    return found


def _environment() -> dict[str, str]:
    # Not the user's agent: ssh-add must talk to ours only.
    return {k: v for k, v in os.environ.items() if k not in ("SSH_AUTH_SOCK", "SSH_AGENT_PID")}


@contextlib.contextmanager
def private_agent(
    ssh: str, folder: Path, keys: Sequence[str], answers: PromptAnswers, host: str
) -> Iterator[str]:
    """An agent holding ``keys``, unlocked with ``answers`` (``for_ssh_add()``'s);
    yields its socket's path, and ends the agent when the block ends.

    Keys whose passphrase is not the given one stay out (the master's login
    then says so); nothing is asked of the user here.

    :raises MasterStartFailed: the agent did not start.
    """
    path = str(folder / f"agent-{secrets.token_hex(4)}")
    argv = [
        _program(ssh, "ssh-agent"),
        "-a",
        path,
        sys.executable,
        "-m",
        "fabric_mux.agentkeeper",
    ]
    # Its own session: the user's Ctrl-C must not end the keeper before we do.
    keeper = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_environment(),
        start_new_session=True,
    )
    assert keeper.stdin is not None and keeper.stdout is not None and keeper.stderr is not None
    try:
        if not keeper.stdout.readline().strip().isdigit():  # the agent's pid: it listens
            keeper.stdin.close()
            keeper.wait(_TIMEOUT)
            said = keeper.stderr.read().decode("utf-8", "replace")
            raise MasterStartFailed(
                host, argv, keeper.returncode, said, "the private ssh-agent did not start"
            )
        _add(ssh, path, folder, keys, answers)
        yield path
    finally:
        keeper.stdin.close()  # the keeper ends the agent and waits for it
        try:
            keeper.wait(_TIMEOUT)
        except subprocess.TimeoutExpired:
            keeper.kill()
            keeper.wait()
        keeper.stdout.close()
        keeper.stderr.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # the agent removes it; one killed hard would not


def _add(ssh: str, agent: str, folder: Path, keys: Sequence[str], answers: PromptAnswers) -> None:
    """``ssh-add KEY...`` into ``agent``, its passphrase prompts answered by ``answers``.

    One ssh-add for all keys: it tries the passphrase that opened one key on
    the next ones itself, so the secret is given once.
    """
    present = [key for key in keys if os.path.isfile(key)]
    if not present:
        log.info("no key file to add to the private agent: %s", list(keys))
        return
    argv = [_program(ssh, "ssh-add"), *present]
    with AskpassServer(folder, answers) as server:
        # ssh-add asks its askpass program only without a terminal (before 8.4: and
        # with DISPLAY set), so it runs in a session of its own.
        env = {**_environment(), **helper_environment(server.path, display=True)}
        env["SSH_AUTH_SOCK"] = agent
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        server.expect_parent(proc.pid)
        try:
            # Its end, without reaping it: its pid must stay its own while we serve.
            wait_for_exit(proc.pid)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    _, stderr = proc.communicate()
    said = stderr.decode("utf-8", "replace").strip()
    log.info("ssh-add into the private agent exited %d: %s", proc.returncode, said)
