"""The ``fabmux`` command: it starts the questions it can guess, then loads Fabric and runs.

Only the standard library is imported before the guesses start (see
:mod:`fabric_mux.early`).
"""

from __future__ import annotations

import gc
import sys

from . import early

__all__ = ["run"]


def run() -> None:
    """The ``fabmux`` command."""
    early.guess(sys.argv[1:])
    try:
        from .main import program

        # What was just imported (Fabric, invoke, paramiko, cryptography) lives as
        # long as the process: kept out of the cyclic collector, which would walk
        # it on every full collection and once more at exit (about 50 ms a run).
        gc.freeze()
        program.run()
    finally:
        early.stop()
