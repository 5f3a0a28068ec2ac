"""Pieces the bench and the demo share: a light-shell server, control folders, timing."""

from __future__ import annotations

import compileall
import contextlib
import ctypes
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import IO

import fabric_mux
from devtools.accounts import TEST_USER, ensure_account
from fabric_mux.protocol import MuxClient
from fabric_mux.testing import SshServer, ssh_server, unwinding_on_signals

__all__ = [
    "REMOTE_USER",
    "byte_compile_package",
    "clean_env",
    "console_script",
    "control_dir",
    "light_server",
    "memory",
    "no_agent",
    "protocol_session",
    "reap_orphans",
    "reaping",
    "remote_folder",
    "remote_user",
    "run_quiet",
    "scratch",
    "stop_masters",
    "timed",
    "unwinding_on_signals",
]

#: The account servers let in when we run as root (the tests use it too).
REMOTE_USER = TEST_USER

_STOP_TIMEOUT = 10.0
_PR_SET_CHILD_SUBREAPER = 36


def byte_compile_package() -> None:
    """fabric_mux's modules compiled, as ``pip install`` leaves an installed package.

    Where PYTHONDONTWRITEBYTECODE is set (as on the machine of the README's
    figures) an editable checkout is otherwise compiled from source in every
    ``fab`` the bench starts, about 20 ms a run that fabric's installed
    modules never pay.
    """
    compileall.compile_dir(os.path.dirname(fabric_mux.__file__), quiet=1)


@contextlib.contextmanager
def reaping() -> Iterator[None]:
    """Adopt the orphans of what runs inside, and reap them before leaving.

    Masters (``ssh -f``) and sshd's connection processes outlive their parents.
    Adopted by pid 1 they linger in ``pgrep`` as zombies until it gets round to
    them; as their subreaper we collect them ourselves.
    """
    adopted = _subreaper(True)
    try:
        yield
    finally:
        if adopted:
            _reap_children()
            _subreaper(False)


def _subreaper(on: bool) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) == 0)


def reap_orphans() -> bool:
    """Reap the orphans adopted so far (masters that ended), without waiting.

    True once no child is left at all.
    """
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return True
        if pid == 0:
            return False


def _reap_children() -> None:
    deadline = time.monotonic() + _STOP_TIMEOUT
    while not reap_orphans():
        if time.monotonic() > deadline:
            print("warning: child processes still running", file=sys.stderr)
            return
        time.sleep(0.01)


def timed(action: Callable[[], object]) -> float:
    """Seconds that ``action()`` took."""
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def clean_env() -> dict[str, str]:
    """Our environment without the agent and without Fabric settings from outside."""
    return {
        key: value
        for key, value in os.environ.items()
        if key != "SSH_AUTH_SOCK" and not key.startswith(("FABRIC_", "INVOKE_"))
    }


@contextlib.contextmanager
def no_agent() -> Iterator[None]:
    """Hide the agent from paramiko in this process: its keys are not the server's."""
    saved = os.environ.pop("SSH_AUTH_SOCK", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["SSH_AUTH_SOCK"] = saved


def console_script(name: str) -> str:
    """The console script installed beside this interpreter (no pyenv shim in between)."""
    path = Path(sys.executable).with_name(name)
    found = str(path) if path.exists() else shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is not installed: pip install -e .")
    return found


def run_quiet(
    argv: list[str],
    *,
    stdin: int | IO[bytes] = subprocess.DEVNULL,
    stdout: int | IO[bytes] = subprocess.PIPE,
    cwd: Path | None = None,
) -> str:
    """Run ``argv`` (never through a shell); its output, or its stderr in the error."""
    proc = subprocess.run(
        argv,
        stdin=stdin,
        stdout=stdout,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=clean_env(),
        check=False,
    )
    if proc.returncode != 0:
        stderr = proc.stderr.decode("utf-8", "replace").strip()
        raise RuntimeError(f"{' '.join(argv)} exited with {proc.returncode}: {stderr}")
    return (proc.stdout or b"").decode("utf-8", "replace")


def scratch(stack: ExitStack, prefix: str) -> Path:
    """A private folder under /tmp (short: sockets may go in it), removed with ``stack``."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    stack.callback(shutil.rmtree, folder, ignore_errors=True)
    return folder


def remote_user() -> str:
    """Who logs in: as root the light-shell account (root's .bashrc is slow here), else us."""
    if os.geteuid() == 0:
        return ensure_account(REMOTE_USER)
    return pwd.getpwuid(os.geteuid()).pw_name


def light_server(
    stack: ExitStack,
    prefix: str = "fmb-srv-",
    latency_ms: float | None = None,
    sshd_options: Sequence[str] = (),
) -> SshServer:
    """A throwaway sshd on 127.0.0.1 for :func:`remote_user`, stopped with ``stack``;
    reached through a relay adding ``latency_ms`` each way when given."""
    user = remote_user()
    # Its own folder straight under /tmp: the remote account reads authorized_keys in it.
    folder = scratch(stack, prefix)
    server = ssh_server(folder, user=user, latency_ms=latency_ms, sshd_options=sshd_options)
    return stack.enter_context(server)


def remote_folder(server: SshServer, name: str) -> Path:
    """A folder in the server's directory that its remote account may write to."""
    folder = server.directory / name
    folder.mkdir()
    account = pwd.getpwnam(server.user)
    if os.geteuid() == 0:
        os.chown(folder, account.pw_uid, account.pw_gid)
    return folder


def stop_masters(folder: Path) -> None:
    """End every master whose control socket is in ``folder``, and wait for them to go."""
    if not folder.is_dir():
        return
    sockets = [path for path in folder.iterdir() if path.is_socket()]
    for path in sockets:
        # -F /dev/null: no user config for the placeholder host "x"; -O exit kills its sessions.
        subprocess.run(
            ["ssh", "-F", "/dev/null", "-S", str(path), "-O", "exit", "x"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
            timeout=_STOP_TIMEOUT,
        )
    # The master removes its socket as it exits.
    deadline = time.monotonic() + _STOP_TIMEOUT
    while any(path.exists() for path in sockets) and time.monotonic() < deadline:
        time.sleep(0.01)


def memory(pids: Iterable[int]) -> tuple[int, int]:
    """Bytes that the processes ``pids`` hold: the sum of their RSS, and of their PSS.

    RSS counts the pages they share (libcrypto, libc) once a process; PSS
    splits each shared page among the processes that map it, so its sum is
    what they cost together.
    """
    rss = pss = 0
    for pid in pids:
        rss += _kib(Path(f"/proc/{pid}/status"), "VmRSS:")
        pss += _kib(Path(f"/proc/{pid}/smaps_rollup"), "Pss:")
    return rss, pss


def _kib(path: Path, field: str) -> int:
    for line in path.read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in {path}")


def control_dir(stack: ExitStack, prefix: str = "fmb-ctl-") -> Path:
    """A private control folder whose masters are stopped, and which is removed, with ``stack``."""
    folder = scratch(stack, prefix)
    stack.callback(stop_masters, folder)
    return folder


def protocol_session(control_path: str, command: str) -> None:
    """One bare session over the mux protocol: the floor under any runner."""
    read_end, write_end = os.pipe()
    try:
        client = MuxClient(control_path)
        try:
            client.open_session(command, (read_end, write_end, write_end))
            status = client.wait_exit()
        finally:
            client.close()
    finally:
        os.close(read_end)
        os.close(write_end)
    if status != 0:
        raise RuntimeError(f"{command!r} over the mux protocol ended with {status}")
