"""``fabric-mux``: see and stop the masters, as ``fab`` would find them.

::

    fabric-mux list                 every master: socket, pid, age, state, route
    fabric-mux check HOST           is HOST's master running? (exit 0 if so)
    fabric-mux stop HOST            end HOST's master
    fabric-mux stop --all           end every master, remove stale sockets

Every command reads the configuration as a ``fab`` run here does (``/etc``, ``~``
and this project's ``fabric.yaml``, ``FABRIC_MUX_*`` variables), takes
``--control-dir`` and ``-F`` (``fab -S``) before or after its name, and
``list`` and ``check`` change nothing: not even the control folder is made.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import re
import shlex
import socket
import stat
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from fabric import Config

from .argv import is_control_socket_name
from .config import MuxConfig, mux_settings, project_folder
from .controldir import default_control_dirs, find_control_dir
from .exceptions import MasterNotOurs, MasterNotResponding, MuxError
from .master import Master, alive_pid, master_pids, stop_socket
from .route import Route
from .screen import visible
from .userlinks import UserMasterLinks

__all__ = ["MasterInfo", "main", "masters_in", "parser"]


@dataclass(frozen=True)
class MasterInfo:
    """One control socket and what answers on it."""

    path: Path
    pid: int | None
    age: float | None
    #: The master's destination and the options that shape its route.
    route: str
    #: alive, stale, frozen (a master that does not answer) or other (not ours).
    state: str
    #: The ssh_config it was started with (``-F``), if any.
    config_file: str | None = None
    destination: str = ""
    #: A master at the user's own path (their ssh_config names it): never stopped here.
    users: bool = False

    @property
    def alive(self) -> bool:
        return self.state == "alive"


def _argv(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []
    return [word.decode("utf-8", "replace") for word in raw if word]


def _hop_of(proxy_command: str) -> str | None:
    """The hop named in one of our ProxyCommands (``ssh ... -S HOP -W '[%h]:%p' hop``)."""
    try:
        words = shlex.split(proxy_command)
    except ValueError:
        return None
    if "-W" not in words or "-S" not in words:
        return None
    index = words.index("-W") + 2
    return words[index] if index < len(words) else None


def _describe(argv: list[str]) -> tuple[str, str | None, str]:
    """(route shown, -F file, destination) from a master's argv."""
    if not argv:
        return "?", None, ""
    shown: list[str] = []
    config_file = None
    for flag, value in zip(argv, [*argv[1:], ""]):
        if flag in ("-l", "-p", "-F"):
            shown.append(f"{flag} {value}")
            if flag == "-F":
                config_file = value
        elif flag == "-o" and value.startswith("ProxyCommand="):
            command = value.split("=", 1)[1]
            hop = _hop_of(command)
            shown.append(f"via {hop}" if hop else f"ProxyCommand {command}")
    destination = argv[-1]
    return " ".join([destination, *shown]), config_file, destination


def _age(pid: int) -> float | None:
    with contextlib.suppress(OSError):
        return time.time() - os.stat(f"/proc/{pid}").st_mtime
    return None


def masters_in(folder: Path) -> Iterator[MasterInfo]:
    """Every control socket in ``folder``, and what answers on it, then the user's own
    masters that fabric-mux rode or started (linked from there). Changes nothing."""
    if not folder.is_dir():
        return
    theirs = [Path(target) for target in UserMasterLinks(folder).paths().values()]
    # Only what fabric-mux names its masters' sockets: a socket of the user's
    # that happens to be in the folder (mux.control_path) is listed as theirs.
    users = {os.path.realpath(path) for path in theirs}
    ours = [
        path
        for path in sorted(folder.iterdir())
        if is_control_socket_name(path.name) and os.path.realpath(path) not in users
    ]
    # Asked all at once: a master that does not answer (stopped, or blocked at a
    # question of its own) costs one reply timeout in all, not one each.
    with ThreadPoolExecutor(max_workers=_AT_ONCE) as pool:
        found = list(pool.map(lambda path: list(_socket_info(path)), [*ours, *theirs]))
    for index, rows in enumerate(found):
        for row in rows:
            yield dataclasses.replace(row, users=True) if index >= len(ours) else row


#: Control sockets asked at once by ``list`` and ``stop --all``.
_AT_ONCE = 32


def _socket_info(path: Path) -> Iterator[MasterInfo]:
    try:
        if not stat.S_ISSOCK(path.lstat().st_mode):
            return
    except OSError:
        return
    try:
        pid = alive_pid(str(path))
    except MasterNotOurs as exc:
        yield MasterInfo(path, None, None, f"(not ours: uid {exc.uid}; left alone)", "other")
        return
    except MasterNotResponding:
        found = master_pids(str(path))
        yield _info(path, found[0] if len(found) == 1 else None, "frozen")
        return
    if pid is None:
        yield MasterInfo(path, None, None, "(no master answers)", "stale")
    else:
        yield _info(path, pid, "alive")


def _info(path: Path, pid: int | None, state: str) -> MasterInfo:
    if pid is None:
        return MasterInfo(path, None, None, "?", state)
    route, config_file, destination = _describe(_argv(pid))
    return MasterInfo(path, pid, _age(pid), route, state, config_file, destination)


def _format_age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _config(args: argparse.Namespace) -> Config:
    """Fabric's config as a ``fab`` run here loads it: /etc, ~, the project's
    fabric.yaml (beside the fabfile found searching up from here, else here),
    the environment (``FABRIC_MUX_CONTROL_DIR``...), then our options."""
    config = MuxConfig(runtime_ssh_path=args.ssh_config, lazy=True)
    config.load_base_conf_files()
    config.merge()  # so that tasks.collection_name/search_root from ~ count
    config.set_project_location(project_folder(config, start=config.tasks.search_root))
    config.load_project()
    config.load_shell_env()
    if args.control_dir is not None:
        config.load_overrides({"mux": {"control_dir": str(args.control_dir)}}, merge=False)
    config.merge()
    try:
        config.load_ssh_config()
    except OSError as exc:  # -F names no file that can be read (Fabric's own check)
        raise _Usage(
            f"cannot read the ssh_config file {args.ssh_config} (-F): {exc.strerror or exc}"
        ) from None
    return config


class _Usage(Exception):
    """A command line that cannot work: one line, exit 2 (as argparse's errors)."""


def _master(host: str, config: Config) -> Master:
    """The master a ``MuxConnection`` to ``host`` would use (nothing is started or made)."""
    return Route.for_host(host, config).master(make_folder=False)


def _list(args: argparse.Namespace) -> int:
    rows = list(masters_in(args.folder))
    if not rows:
        print(f"no masters in {args.folder}")
        return 0
    print(f"{'SOCKET':<22} {'PID':>7} {'AGE':>7}  {'STATE':<6}  ROUTE")
    for row in rows:
        pid = str(row.pid) if row.pid is not None else "-"
        age = _format_age(row.age)
        route, name = row.route, row.path.name
        if row.users:
            route, name = f"{route}  (your own, at {row.path}: ssh -O exit stops it)", "(yours)"
        # A master's argv and a host's name come from elsewhere: shown, not obeyed.
        print(visible(f"{name:<22} {pid:>7} {age:>7}  {row.state:<6}  {route}"))
    return 0


def _check(args: argparse.Namespace) -> int:
    master = _master(args.host, args.config)
    host = visible(args.host)
    pid = master.alive()
    if pid is not None:
        print(f"{host}: master running (pid={pid}) at {master.control_path}")
        return 0
    print(f"{host}: no master running ({master.control_path})")
    # The same host started with another ssh_config (fab -S) is another route.
    for row in masters_in(args.folder):
        if row.alive and row.destination == args.host:
            given = f" -F {shlex.quote(row.config_file)}" if row.config_file else ""
            print(
                visible(
                    f"  but {row.path} (pid {row.pid}) is a master of {args.host} by another "
                    f"route: {row.route}; fabric-mux check{given} {args.host} looks at that one"
                )
            )
    return 1


def _stop(args: argparse.Namespace) -> int:
    if args.all:
        return _stop_all(args.folder)
    if not args.host:
        print("fabric-mux stop: name a HOST or give --all", file=sys.stderr)
        return 2
    master = _master(args.host, args.config)
    if master.stop():
        print(f"{visible(args.host)}: master stopped")
    else:
        print(f"{visible(args.host)}: no master was running")
    return 0


def _stop_all(folder: Path) -> int:
    """Stop every master of ours in ``folder``; one that cannot be stopped is named
    and the others are stopped all the same (exit 1 then)."""
    rows = list(masters_in(folder))
    mine = [row for row in rows if row.state != "other" and not row.users]

    def stop(row: MasterInfo) -> bool | MuxError:
        try:
            return stop_socket(str(row.path))
        except MuxError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=_AT_ONCE) as pool:
        results = list(pool.map(stop, mine))
    _clear_helper_sockets(folder)
    UserMasterLinks(folder).forget_gone()
    stopped = sum(1 for result in results if result is True)
    failed = [(row, result) for row, result in zip(mine, results) if isinstance(result, MuxError)]
    for row, error in failed:
        print(f"fabric-mux: could not stop {row.path}: {error}", file=sys.stderr)
    yours = sum(1 for row in rows if row.users and row.alive)
    left = f"; left {yours} of your own alone (ssh -O exit HOST stops one)" if yours else ""
    print(f"stopped {stopped} master(s) in {folder}{left}")
    return 1 if failed else 0


#: The sockets a master's start serves its prompts and keys on (see askpass, agent).
_HELPER_SOCKET = re.compile(r"(askpass|agent)-[0-9a-f]{8}")


def _clear_helper_sockets(folder: Path) -> None:
    """Remove the askpass and agent sockets of starts that were killed: nothing
    listens there any more. One that answers belongs to a start under way."""
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        if not _HELPER_SOCKET.fullmatch(path.name):
            continue
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(path))
            except ConnectionRefusedError:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            except OSError:
                continue


def parser(default_dir: str | None = None) -> argparse.ArgumentParser:
    """The ``fabric-mux`` command line; ``default_dir``: how ``--help`` names the
    default control folder (None: the one this machine would use)."""
    if default_dir is None:
        default_dir = str(default_control_dirs()[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--control-dir",
        type=Path,
        default=argparse.SUPPRESS,
        metavar="DIR",
        help="folder of the control sockets (default: mux.control_dir from fabric.yaml or "
        f"FABRIC_MUX_CONTROL_DIR, else {default_dir})",
    )
    common.add_argument(
        "-F",
        "--ssh-config",
        default=argparse.SUPPRESS,
        metavar="FILE",
        help="the ssh_config file, as given to fab -S",
    )
    parser = argparse.ArgumentParser(
        prog="fabric-mux",
        description="See and stop fabric-mux's OpenSSH masters, as fab would find them.",
        parents=[common],
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "list", parents=[common], help="every master: socket, pid, age, state, route"
    )
    check = commands.add_parser(
        "check", parents=[common], help="is HOST's master running? (exit 0 if so)"
    )
    check.add_argument("host", metavar="HOST")
    stop = commands.add_parser("stop", parents=[common], help="end HOST's master, or --all")
    stop.add_argument("host", nargs="?", metavar="HOST")
    stop.add_argument("--all", action="store_true", help="every master in the folder")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.control_dir = getattr(args, "control_dir", None)
    args.ssh_config = getattr(args, "ssh_config", None)
    try:
        args.config = _config(args)
        args.folder = find_control_dir(mux_settings(args.config).control_dir)
        handler = {"list": _list, "check": _check, "stop": _stop}[args.command]
        return handler(args)
    except _Usage as exc:
        print(f"fabric-mux: {exc}", file=sys.stderr)
        return 2
    except MuxError as exc:
        print(f"fabric-mux: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
