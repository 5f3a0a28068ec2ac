"""shell() and pty window sizes through the master, against a real sshd."""

from __future__ import annotations

import io
import os
import signal

import fabric
import pytest
from waiting import wait_until

import fabric_mux.runners
from fabric_mux import MuxConnection
from fabric_mux.testing import SshServer


@pytest.mark.usefixtures("remote_pty")
def test_shell_runs_scripted_input(sshd: SshServer, config: fabric.Config) -> None:
    c = MuxConnection(sshd.alias, config=config)
    script = "echo from-the-shell $((6 * 7))\nexit 3\n"
    result = c.shell(in_stream=io.StringIO(script))
    assert "from-the-shell 42" in result.stdout
    assert result.exited == 3
    assert result.pty
    assert sshd.logins() == 1


def test_shell_refuses_run_only_options(sshd: SshServer, config: fabric.Config) -> None:
    c = MuxConnection(sshd.alias, config=config)
    with pytest.raises(TypeError, match="timeout"):
        c.shell(timeout=3)


@pytest.mark.usefixtures("remote_pty")
def test_window_size_follows_the_local_terminal(
    sshd: SshServer, config: fabric.Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    size = [(80, 24)]
    monkeypatch.setattr(fabric_mux.runners, "pty_size", lambda: size[-1])
    c = MuxConnection(sshd.alias, config=config)
    # Prints the size once at start and again for every line it reads.
    promise = c.run(
        "stty size; while read line; do stty size; done",
        pty=True,
        hide=True,
        asynchronous=True,
    )
    runner = promise.runner

    def seen() -> str:
        return "".join(runner.stdout)

    assert wait_until(lambda: "24 80" in seen())
    size.append((132, 50))
    os.kill(os.getpid(), signal.SIGWINCH)  # what the terminal sends when resized

    def resized() -> bool:
        runner.write_proc_stdin("\n")
        return "50 132" in seen()

    assert wait_until(resized)
    runner.write_proc_stdin("\x04")  # ^D: the loop's read ends
    assert promise.join().exited == 0
