"""``fabmux``: the ``fab`` program with fabric-mux on, plus ``--no-mux``, ``--mux-persist``,
``--mux-control-path``, ``-P``/``--parallel``, ``-z``/``--pool-size``, and for fleets
``--serial``, ``--max-fail``, ``--gather`` and ``--report``."""

from __future__ import annotations

import sys
from typing import Any, NamedTuple

from fabric import __version__ as fabric_version
from fabric.main import Fab
from invoke.exceptions import Exit
from invoke.parser.argument import Argument
from paramiko.ssh_exception import ConfigParseError

from . import __version__
from .config import MuxConfig, checked_flag, load_environment, mux_settings, project_folder
from .exceptions import BadConfig, MuxError
from .executor import MuxExecutor
from .screen import visible
from .upstream import set_overrides

__all__ = ["SWITCHES", "VALUE_FLAGS", "MuxFab", "ValueFlag", "make_program", "program"]


class ValueFlag(NamedTuple):
    """A flag that gives a ``mux`` key a value."""

    #: The ``mux`` key it sets.
    key: str
    #: The flag as its errors name it.
    shown: str
    #: What it takes, as the docs name its value (``--serial N|N%|LIST``).
    value: str


#: The flags that give a ``mux`` key a value, by invoke's name for them.
VALUE_FLAGS = {
    "mux-persist": ValueFlag("persist", "--mux-persist", "SECONDS"),
    "mux-control-path": ValueFlag("control_path", "--mux-control-path", "PATH"),
    "pool-size": ValueFlag("pool_size", "-z/--pool-size", "N"),
    "serial": ValueFlag("serial", "--serial", "N|N%|LIST"),
    "max-fail": ValueFlag("max_fail", "--max-fail", "N|N%"),
    "report": ValueFlag("report", "--report", "FILE"),
}

#: The flags that switch a ``mux`` key: the key, and the value they give it.
SWITCHES = {
    "no-mux": ("enabled", False),
    "parallel": ("parallel", True),
    "gather": ("gather", True),
}


#: The flags that only a parallel run reads.
_FLEET_FLAGS = ("gather", "report", "max-fail")


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
                help="With -P: hosts that may fail (N, or N% of those started) before the run "
                "starts no more tasks or batches (with --serial, default 0).",
            ),
            Argument(
                names=("gather",),
                kind=bool,
                help="With -P: each task's output once per distinct output, under its hosts.",
            ),
            Argument(
                names=("report",), help="With -P: write a JSON report of the run to this file."
            ),
        ]

    def execute(self) -> None:
        """invoke's, with a fabric-mux failure said on its own lines, as ``-P``'s
        summary says it (ssh's words, no traceback; ``--debug`` shows one), and
        Ctrl-C said (invoke ends a run it interrupts with exit 1 and no word)."""
        try:
            super().execute()
        except MuxError as exc:
            if isinstance(exc, Exit) or self.args.debug.value:
                raise
            said = "\n".join(map(visible, f"fabric-mux: {exc}".splitlines()))
            raise Exit(said, code=1) from None
        except KeyboardInterrupt:
            settings = mux_settings(self.config)
            if not (settings.parallel or settings.serial):  # -P says where it was
                sys.stderr.write("fabric-mux: interrupted (Ctrl-C)\n")
            raise

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
        try:
            super().update_config()  # Fabric reads the ssh_config files here
        except ConfigParseError as exc:
            said = f"fabric-mux: cannot read the ssh_config: {visible(str(exc))}"
            raise Exit(said, code=1) from None
        mux: dict[str, Any] = {}
        for flag, (key, switched) in SWITCHES.items():
            if self.args[flag].value:
                mux[key] = switched
        # Read as fabric.yaml's text is; a wrong one is one line naming the flag.
        for flag, (key, shown, _) in VALUE_FLAGS.items():
            value = self.args[flag].value
            if value is not None:
                mux[key] = checked_flag(shown, key, value)
        if mux:
            set_overrides(self.config, "mux", mux)
        self._check_fleet_flags()

    def _check_fleet_flags(self) -> None:
        """Refuse ``--gather``, ``--report`` and ``--max-fail`` in a run that is not
        parallel, where nothing would read them: said, not silently ignored. (As
        ``mux`` keys in fabric.yaml they say what parallel runs do, and other runs
        leave them be.)"""
        given = [f"--{flag}" for flag in _FLEET_FLAGS if self.args[flag].value not in (None, False)]
        if not given:
            return
        load_environment(self.config)  # FABRIC_MUX_PARALLEL makes a parallel run too
        settings = mux_settings(self.config)
        if not (settings.parallel or settings.serial):
            raise BadConfig(
                f"{', '.join(given)} {'work' if len(given) > 1 else 'works'} only in a "
                "parallel run: add -P (or --serial)"
            )


def make_program() -> MuxFab:
    return MuxFab(
        name="Fabric (fabric-mux)",
        version=f"{__version__} (Fabric {fabric_version})",
        executor_class=MuxExecutor,
        config_class=MuxConfig,
    )


program = make_program()
