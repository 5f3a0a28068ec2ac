"""Running ``fab`` (or ``fabmux``) as a user would, in a project folder."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from waiting import wait_until

MUX_YAML = "tasks:\n  executor_class: fabric_mux.MuxExecutor\nmux:\n  control_dir: {control_dir}\n"


#: The signals the tests send to a child as a user's terminal would: Ctrl-C, a hangup.
#: A job that a shell without job control starts in the background (``nohup
#: pytest &``, ``setsid ... &``, some CI runners) has SIGINT ignored (and nohup
#: SIGHUP too); children inherit that, and a Python started so never raises
#: KeyboardInterrupt: a test would wait for an end that never comes.
SENT_SIGNALS = (signal.SIGINT, signal.SIGHUP)


def default_signals() -> None:
    """Give :data:`SENT_SIGNALS` their default action: in a forked child, before exec."""
    for number in SENT_SIGNALS:
        signal.signal(number, signal.SIG_DFL)


def with_default_signals(argv: list[str]) -> list[str]:
    """``argv``, run with :data:`SENT_SIGNALS` at their default action (an exec on
    the way: no preexec_fn, which is unsafe in a process with threads)."""
    reset = (
        "import os, signal, sys\n"
        f"for number in {[int(number) for number in SENT_SIGNALS]}:\n"
        "    signal.signal(number, signal.SIG_DFL)\n"
        "os.execv(sys.argv[1], sys.argv[1:])\n"
    )
    return [sys.executable, "-c", reset, *argv]


def program(name: str = "fab") -> str:
    """The console script installed beside this interpreter."""
    path = Path(sys.executable).with_name(name)
    found = str(path) if path.exists() else shutil.which(name)
    assert found, f"{name} is not installed"
    return found


def fab_argv(ssh_config: Path, hosts: str, *args: str, name: str = "fab") -> list[str]:
    return [program(name), "-S", str(ssh_config), "-H", hosts, *args]


def no_agent_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}


def run_in(
    project: Path, argv: list[str], stdin: int = subprocess.DEVNULL
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` to its end in ``project``, in a session of its own (as from a
    terminal), without the agent; its exit code and output."""
    return subprocess.run(
        argv,
        cwd=project,
        env=no_agent_env(),
        stdin=stdin,
        capture_output=True,
        text=True,
        check=False,
        start_new_session=True,
        timeout=120,
    )


def start_in(project: Path, argv: list[str]) -> subprocess.Popen[str]:
    """Start ``argv`` in ``project`` as :func:`run_in` runs it, with Ctrl-C and a
    hang-up at their default action, for a test to signal it."""
    return subprocess.Popen(
        with_default_signals(argv),
        cwd=project,
        env=no_agent_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def interrupted_when(
    project: Path, argv: list[str], ready: Callable[[], bool]
) -> subprocess.CompletedProcess[str]:
    """Start ``argv`` in ``project`` as :func:`start_in` does, Ctrl-C it once
    ``ready()`` holds, and let it end (far sooner than its own work would)."""
    child = start_in(project, argv)
    try:
        assert wait_until(ready, deadline=60)
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    return subprocess.CompletedProcess(argv, child.returncode, out, err)


def fab(
    project: Path,
    ssh_config: Path,
    hosts: str,
    *args: str,
    name: str = "fab",
    stdin: int = subprocess.DEVNULL,
) -> subprocess.CompletedProcess[str]:
    """Run it to its end in ``project``, in a session of its own (as from a terminal)."""
    return run_in(project, fab_argv(ssh_config, hosts, *args, name=name), stdin=stdin)


def run_fab(project: Path, ssh_config: Path, hosts: str, *args: str, name: str = "fab") -> str:
    """Run it to its end; its stdout, after checking that it succeeded."""
    proc = fab(project, ssh_config, hosts, *args, name=name)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout
