"""No raw failure left: fork, leaked slots, frozen masters, descriptor limits,
unusable control folders, forwards, big output. Each against a real sshd."""

from __future__ import annotations

import gc
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Generator
from pathlib import Path
from typing import Any

import fabric
import pytest
from conftest import Flag
from invoke.watchers import Responder

from fabric_mux import MuxConnection, process
from fabric_mux.exceptions import (
    BadConfig,
    BadForward,
    ControlDirUnusable,
    ForwardFailed,
    MasterNotResponding,
)
from fabric_mux.master import Master
from fabric_mux.runners import WATCH_WINDOW
from fabric_mux.testing import SshServer


def settings(sshd: SshServer, control_dir: Path, **mux: Any) -> fabric.Config:
    return sshd.fabric_config({"mux": {"control_dir": str(control_dir), **mux}})


# -- fork ---------------------------------------------------------------------------


def test_a_forked_child_leaves_the_parents_sessions_alone(
    sshd: SshServer, config: fabric.Config, flag: Flag
) -> None:
    c = MuxConnection(sshd.alias, config=config)
    running = c.run(flag.waited_for("echo finished"), hide=True, asynchronous=True)
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through its exit code
        code = 1
        try:
            c.close()  # the parent's session is not the child's to end
            ours = c.run("echo child", hide=True).stdout  # a session of its own
            c.close()
            gc.collect()
            code = 0 if ours == "child\n" else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    flag.raise_()
    assert running.join().stdout == "finished\n"
    assert sshd.logins() == 1


@pytest.mark.parametrize(
    "name", ["resolved_lock", "terminal_lock", "masters_lock", "screen._lock", "route"]
)
def test_a_lock_held_by_another_thread_at_a_fork_is_free_in_the_child(name: str) -> None:
    def lock() -> Any:
        state = process.current()  # in the child: the child's own
        if name == "route":
            return state.route_lock("/some/route.lock")
        if name == "masters_lock":  # the one Master.shared makes a master under
            return state.registry(Master)._lock
        found: Any = state
        for part in name.split("."):
            found = getattr(found, part)
        return found

    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with lock():
            held.set()
            release.wait(60)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(60)
        child = os.fork()
        if child == 0:  # pragma: no cover - the child reports through its exit code
            os._exit(0 if lock().acquire(timeout=10) else 1)
        _, status = os.waitpid(child, 0)
    finally:
        release.set()
        holder.join()
    assert os.waitstatus_to_exitcode(status) == 0


# -- slots ----------------------------------------------------------------------------


def test_connections_dropped_after_sftp_give_their_slots_back(
    sshd: SshServer, control_dir: Path
) -> None:
    config = settings(sshd, control_dir, max_sessions=2, reply_timeout=3)
    for _ in range(5):
        c = MuxConnection(sshd.alias, config=config)
        c.sftp().listdir(".")
        del c
        gc.collect()
    assert MuxConnection(sshd.alias, config=config).run("echo ok", hide=True).stdout == "ok\n"


def test_unjoined_asynchronous_runs_give_their_slots_back(
    sshd: SshServer, control_dir: Path
) -> None:
    config = settings(sshd, control_dir, max_sessions=2, reply_timeout=5)
    c = MuxConnection(sshd.alias, config=config)
    promises = [c.run("true", asynchronous=True, hide=True) for _ in range(10)]
    assert c.run("echo ok", hide=True).stdout == "ok\n"
    assert len(promises) == 10  # never joined


# -- frozen masters and servers ------------------------------------------------------


def test_a_stopped_master_is_reported_and_never_doubled(sshd: SshServer, control_dir: Path) -> None:
    config = settings(sshd, control_dir, reply_timeout=1)
    c = MuxConnection(sshd.alias, config=config)
    c.run("true")
    pid = c.master_pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        for connection in (c, MuxConnection(sshd.alias, config=config)):
            with pytest.raises(
                MasterNotResponding, match=rf"{sshd.alias}: the master \(pid {pid}\)"
            ):
                connection.run("true")
        assert os.path.exists(str(c.control_path))  # not replaced by a second master
    finally:
        os.kill(pid, signal.SIGCONT)
    assert MuxConnection(sshd.alias, config=config).run("echo again", hide=True).stdout == "again\n"
    assert sshd.logins() == 1


def test_a_frozen_server_is_told_apart_from_a_frozen_master(
    sshd: SshServer, control_dir: Path
) -> None:
    config = settings(sshd, control_dir, reply_timeout=2, server_alive_interval=60)
    c = MuxConnection(sshd.alias, config=config)
    c.run("true")
    sshd.freeze()
    try:
        with pytest.raises(MasterNotResponding, match="answers, but the server behind it"):
            c.run("true")
    finally:
        sshd.thaw()


# -- descriptors ----------------------------------------------------------------------

DESCRIPTOR_RUN = textwrap.dedent(
    """
    import gc, json, os, resource, sys, threading
    import fabric
    from fabric_mux import MuxConnection
    ssh_config, control_dir, alias = sys.argv[1:4]
    config = fabric.Config(runtime_ssh_path=ssh_config,
                           overrides={"mux": {"control_dir": control_dir}})
    MuxConnection(alias, config=config).run("true")  # the master is up
    # Made first: Fabric's Connection() itself needs /etc/passwd, as stock's does.
    connections = [MuxConnection(alias, config=config) for _ in range(20)]
    gc.collect()
    before = len(os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    errors, done = [], []
    def work(c):
        for _ in range(5):
            try:
                c.run("true", hide=True)
                done.append(1)
            except Exception as exc:
                errors.append(type(exc).__name__ + ": " + str(exc).split(":")[-1][:60])
        c.close()
    threads = [threading.Thread(target=work, args=(c,)) for c in connections]
    for t in threads: t.start()
    for t in threads: t.join()
    gc.collect()
    print(json.dumps({"before": before, "after": len(os.listdir("/proc/self/fd")),
                      "errors": errors, "done": len(done)}))
    """
)


def test_running_out_of_descriptors_is_clear_and_leaks_none(
    sshd: SshServer, control_dir: Path
) -> None:
    run = subprocess.run(
        [sys.executable, "-c", DESCRIPTOR_RUN, str(sshd.ssh_config), str(control_dir), sshd.alias],
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(run.stdout)
    assert result["errors"], "64 descriptors should not be enough for 20 threads"
    assert {error.split(":")[0] for error in result["errors"]} == {"OutOfDescriptors"}
    assert result["after"] == result["before"], result
    assert result["done"] + len(result["errors"]) == 100


# -- unusable control folders --------------------------------------------------------


@pytest.mark.parametrize(
    ("folder", "why"),
    [
        (b"/tmp/fmux-\xff", "not valid UTF-8"),
        ("/proc/fmux-cannot-be", "cannot be made"),
        ("/etc/hostname/fmux", "cannot be made: /etc/hostname is not a folder"),
    ],
)
def test_an_unusable_control_folder_says_what_to_change(
    sshd: SshServer, folder: str | bytes, why: str
) -> None:
    config = sshd.fabric_config({"mux": {"control_dir": folder}})
    with pytest.raises(ControlDirUnusable, match=why):
        MuxConnection(sshd.alias, config=config).run("true")
    assert not os.path.lexists(os.fsdecode(folder))
    assert sshd.logins() == 0


def test_a_control_folder_with_a_double_quote_is_a_bad_setting(sshd: SshServer) -> None:
    """ssh's options cannot carry it: refused as the setting is read, before anything."""
    config = sshd.fabric_config({"mux": {"control_dir": '/tmp/fmux"quote'}})
    with pytest.raises(BadConfig, match=r"mux\.control_dir takes a path without a double quote"):
        MuxConnection(sshd.alias, config=config).run("true")
    assert not os.path.lexists('/tmp/fmux"quote')
    assert sshd.logins() == 0


# -- forwards -------------------------------------------------------------------------


def test_a_local_forward_on_port_zero_yields_the_port_it_listens_on(
    sshd: SshServer, config: fabric.Config
) -> None:
    c = MuxConnection(sshd.alias, config=config)
    # 127.0.0.1, not Fabric's default "localhost": a bare container may have no /etc/hosts.
    with c.forward_local(0, remote_port=sshd.port, remote_host="127.0.0.1") as port:
        assert port != 0
        with socket.create_connection(("127.0.0.1", port), timeout=10) as through:
            assert through.recv(8) == b"SSH-2.0-"  # the server, reached through the forward


@pytest.mark.parametrize(("local", "remote"), [(70000, 22), (-1, 22), (8000, -5), (8000, 70000)])
def test_ports_outside_the_range_are_refused_clearly(
    sshd: SshServer, config: fabric.Config, local: int, remote: int
) -> None:
    c = MuxConnection(sshd.alias, config=config)
    with pytest.raises(BadForward, match="ports are"), c.forward_local(local, remote):
        pass


def test_a_busy_ipv4_localhost_port_fails_as_stock_fabric_does(
    sshd: SshServer, config: fabric.Config
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        c = MuxConnection(sshd.alias, config=config)
        with (
            pytest.raises(ForwardFailed, match=f"127.0.0.1:{port}"),
            c.forward_local(port, remote_port=sshd.port),
        ):
            pass


# -- big output -----------------------------------------------------------------------


class CountingResponder(Responder):
    """A Responder that notes the longest stream it was shown."""

    longest = 0

    def submit(self, stream: str) -> Generator[str, None, None]:
        self.longest = max(self.longest, len(stream))
        yield from super().submit(stream)


def test_watchers_see_a_bounded_window_and_still_answer(
    sshd: SshServer, config: fabric.Config
) -> None:
    c = MuxConnection(sshd.alias, config=config)
    watcher = CountingResponder(pattern=r"name\? ", response="world\n")
    size = 4 * 1024 * 1024
    command = f"head -c {size} /dev/zero | tr '\\0' x; printf 'name? '; read n; echo; echo $n"
    result = c.run(command, watchers=[watcher], hide=True)
    assert len(result.stdout) == size + len("name? \nworld\n")
    assert result.stdout.endswith("name? \nworld\n")
    assert watcher.longest <= WATCH_WINDOW  # not the whole 4 MB, chunk after chunk


def test_big_output_arrives_whole_without_watchers(sshd: SshServer, config: fabric.Config) -> None:
    c = MuxConnection(sshd.alias, config=config)
    size = 32 * 1024 * 1024
    result = c.run(f"head -c {size} /dev/zero | tr '\\0' y", hide=True)
    assert len(result.stdout) == size and set(result.stdout) == {"y"}
