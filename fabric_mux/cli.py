"""``fabric-mux``: see and stop the masters in a control folder.

::

    fabric-mux list                 every master: route, pid, age, alive or stale
    fabric-mux check HOST           is HOST's master running? (exit 0 if so)
    fabric-mux stop HOST            end HOST's master
    fabric-mux stop --all           end every master, remove stale sockets
"""

from __future__ import annotations

import argparse
import contextlib
import os
import stat
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from fabric import Config

from .config import MuxConfig, mux_settings
from .controldir import default_control_dirs, prepare_control_dir
from .exceptions import MasterNotOurs, MuxError
from .master import Master, alive_pid, stop_socket

__all__ = ["MasterInfo", "main", "masters_in"]


@dataclass(frozen=True)
class MasterInfo:
    """One control socket and what answers on it."""

    path: Path
    pid: int | None
    age: float | None
    route: str
    #: Set when another user's process serves the socket: never touched.
    foreign_uid: int | None = None

    @property
    def alive(self) -> bool:
        return self.pid is not None


def _route_of(pid: int) -> str:
    """The master's destination and options, read back from its argv."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    words = [word.decode("utf-8", "replace") for word in argv if word]
    shown = []
    for flag, value in zip(words, [*words[1:], ""]):
        if flag in ("-l", "-p", "-F", "-J"):
            shown.append(f"{flag} {value}")
        elif value.startswith("ProxyCommand=") and flag == "-o":
            shown.append(
                "via " + value.split(" -W ", 1)[-1].split()[-1] if " -S " in value else value
            )
    destination = words[-1] if words else "?"
    return " ".join([destination, *shown])


def _age(pid: int) -> float | None:
    with contextlib.suppress(OSError):
        return time.time() - os.stat(f"/proc/{pid}").st_mtime
    return None


def masters_in(folder: Path) -> Iterator[MasterInfo]:
    """Every control socket in ``folder``, alive or stale."""
    if not folder.is_dir():
        return
    for path in sorted(folder.iterdir()):
        try:
            if not stat.S_ISSOCK(path.lstat().st_mode):
                continue
        except FileNotFoundError:
            continue
        try:
            pid = alive_pid(str(path))
        except MasterNotOurs as exc:
            route = f"(not ours: uid {exc.uid}; left alone)"
            yield MasterInfo(path, None, None, route, foreign_uid=exc.uid)
            continue
        if pid is None:
            yield MasterInfo(path, None, None, "(stale: no master answers)")
        else:
            yield MasterInfo(path, pid, _age(pid), _route_of(pid))


def _format_age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _config(args: argparse.Namespace) -> Config:
    """Fabric's config as ``fab`` would load it here: /etc, ~ and ./fabric.yaml.

    So ``check``/``stop`` work out the same route, and the same control
    folder, as the fab runs in this project.
    """
    config = MuxConfig(runtime_ssh_path=args.ssh_config, lazy=True)
    config.load_base_conf_files()
    config.set_project_location(os.getcwd())
    config.load_project()
    if args.control_dir is not None:
        config.load_overrides({"mux": {"control_dir": str(args.control_dir)}}, merge=False)
    config.merge()
    config.load_ssh_config()
    return config


def _connection(host: str, args: argparse.Namespace) -> Master:
    """The master a ``MuxConnection`` to ``host`` would use (nothing is started)."""
    from .connection import MuxConnection

    return MuxConnection(host, config=args.config).route_master()


def _list(args: argparse.Namespace) -> int:
    rows = list(masters_in(args.control_dir))
    if not rows:
        print(f"no masters in {args.control_dir}")
        return 0
    print(f"{'SOCKET':<22} {'PID':>7} {'AGE':>7}  STATE  ROUTE")
    for row in rows:
        state = "alive" if row.alive else "stale" if row.foreign_uid is None else "other"
        pid = str(row.pid) if row.pid is not None else "-"
        print(f"{row.path.name:<22} {pid:>7} {_format_age(row.age):>7}  {state:<5}  {row.route}")
    return 0


def _check(args: argparse.Namespace) -> int:
    master = _connection(args.host, args)
    pid = master.alive()
    if pid is None:
        print(f"{args.host}: no master running ({master.control_path})")
        return 1
    print(f"{args.host}: master running (pid={pid}) at {master.control_path}")
    return 0


def _stop(args: argparse.Namespace) -> int:
    if args.all:
        stopped = sum(
            stop_socket(str(info.path))
            for info in masters_in(args.control_dir)
            if info.foreign_uid is None
        )
        print(f"stopped {stopped} master(s) in {args.control_dir}")
        return 0
    if not args.host:
        print("fabric-mux stop: name a HOST or give --all", file=sys.stderr)
        return 2
    master = _connection(args.host, args)
    if master.stop():
        print(f"{args.host}: master stopped")
    else:
        print(f"{args.host}: no master was running")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fabric-mux", description="See and stop fabric-mux's OpenSSH masters."
    )
    parser.add_argument(
        "--control-dir",
        type=Path,
        default=None,
        help="folder of the control sockets (default: mux.control_dir from fabric.yaml, "
        f"else {default_control_dirs()[0]})",
    )
    parser.add_argument(
        "-F", "--ssh-config", default=None, help="ssh_config file, as given to fab -S"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="every master: route, pid, age, alive or stale")
    check = commands.add_parser("check", help="is HOST's master running? (exit 0 if so)")
    check.add_argument("host")
    stop = commands.add_parser("stop", help="end HOST's master, or --all of them")
    stop.add_argument("host", nargs="?")
    stop.add_argument("--all", action="store_true", help="every master in the folder")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        args.config = _config(args)
        args.control_dir = prepare_control_dir(mux_settings(args.config).control_dir)
        handler = {"list": _list, "check": _check, "stop": _stop}[args.command]
        return handler(args)
    except MuxError as exc:
        print(f"fabric-mux: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
