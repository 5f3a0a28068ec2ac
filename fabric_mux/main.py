"""``fabmux``: the ``fab`` program with fabric-mux on, plus ``--no-mux``, ``--mux-persist``,
``--mux-control-path``, ``-P``/``--parallel``, ``-z``/``--pool-size``, and for fleets
``--serial``, ``--max-fail``, ``--gather`` and ``--report``."""

from __future__ import annotations

from typing import Any

from fabric import __version__ as fabric_version
from fabric.main import Fab
from invoke.parser.argument import Argument

from . import __version__
from .config import MuxConfig, checked_flag, project_folder
from .executor import MuxExecutor
from .upstream import set_overrides

__all__ = ["MuxFab", "make_program", "program"]

#: The flags that give a ``mux`` key a value: the key, and the flag as its errors name it.
_VALUE_FLAGS = {
    "mux-persist": ("persist", "--mux-persist"),
    "mux-control-path": ("control_path", "--mux-control-path"),
    "pool-size": ("pool_size", "-z/--pool-size"),
    "serial": ("serial", "--serial"),
    "max-fail": ("max_fail", "--max-fail"),
    "report": ("report", "--report"),
}


class MuxFab(Fab):  # type: ignore[misc]
    """``fab`` with every task given a ``MuxConnection``."""

    def core_args(self) -> list[Any]:
        args: list[Any] = super().core_args()
        return [
            *args,
            Argument(names=("no-mux",), kind=bool, help="Use plain Fabric connections."),
            Argument(
                names=("mux-persist",),
                help="Seconds the masters stay up after the run (0: not at all).",
            ),
            Argument(
                names=("mux-control-path",),
                help="Ride the master at this control socket (ssh -S; %-tokens and ~ as ssh's "
                "ControlPath); started there if none answers.",
            ),
            Argument(
                names=("parallel", "P"),
                kind=bool,
                help="Run each task on all hosts at once, tasks in order.",
            ),
            Argument(
                names=("pool-size", "z"),
                help="With -P: at most this many hosts at a time (default: mux.pool_size).",
            ),
            Argument(
                names=("serial",),
                help="A rolling run: all tasks on a batch of hosts, then the next: N hosts, "
                "N%, or a list (1,10%,100%: a canary first). Implies -P.",
            ),
            Argument(
                names=("max-fail",),
                help="Hosts that may fail (N, or N% of those started) before the run starts "
                "no more tasks or batches (with --serial, default 0).",
            ),
            Argument(
                names=("gather",),
                kind=bool,
                help="With -P: each task's output once per distinct output, under its hosts.",
            ),
            Argument(names=("report",), help="Write a JSON report of the run to this file."),
        ]

    def load_collection(self) -> None:
        super().load_collection()
        if self._remainder_only:
            self._load_project_config()

    def _load_project_config(self) -> None:
        """``fabmux -H h -- cmd`` reads the project's fabric.yaml, as a task run does.

        Stock ``fab`` reads project config only beside a fabfile it loads, and
        with only a command to run it loads none. Here the project is where
        the fabfile would be found (searching up from here), else this folder.
        """
        folder = project_folder(
            self.config,
            start=self.args["search-root"].value,
            name=self.args.collection.value,
            loader_class=self.loader_class,
        )
        self.config.set_project_location(folder)
        self.config.load_project()

    def update_config(self) -> None:
        super().update_config()
        mux: dict[str, Any] = {}
        if self.args["no-mux"].value:
            mux["enabled"] = False
        if self.args.parallel.value:
            mux["parallel"] = True
        if self.args.gather.value:
            mux["gather"] = True
        # Read as fabric.yaml's text is; a wrong one is one line naming the flag.
        for flag, (key, shown) in _VALUE_FLAGS.items():
            value = self.args[flag].value
            if value is not None:
                mux[key] = checked_flag(shown, key, value)
        if mux:
            set_overrides(self.config, "mux", mux)


def make_program() -> MuxFab:
    return MuxFab(
        name="Fabric (fabric-mux)",
        version=f"{__version__} (Fabric {fabric_version})",
        executor_class=MuxExecutor,
        config_class=MuxConfig,
    )


program = make_program()
