"""Where fabric-mux keeps its files unless told otherwise.

Standard library only: the ``fabmux`` command looks here before Fabric is loaded
(see :mod:`fabric_mux.early`).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["KEPT", "default_control_dirs", "default_failed_hosts"]

#: The folder of ``ssh -G`` answers kept between runs, inside the control folder.
KEPT = "ssh-G"


def default_control_dirs() -> list[Path]:
    """``$XDG_RUNTIME_DIR/fabric-mux`` when the variable is set, then ``~/.ssh/fabric-mux``."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    fallback = Path.home() / ".ssh" / "fabric-mux"
    return [Path(runtime) / "fabric-mux", fallback] if runtime else [fallback]


def default_failed_hosts() -> Path:
    """Where a parallel run lists the hosts it failed on, for ``-H @FILE`` to rerun:
    ``$XDG_STATE_HOME/fabric-mux/failed-hosts`` (``~/.local/state`` by default)."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "fabric-mux" / "failed-hosts"
