"""One SSH login per host for Fabric: every session goes through an OpenSSH master.

The names below are imported on first use: the helper programs that ssh runs
(``fabric-mux-askpass``, ``fabric-mux-shell``) live in this package and must
start without loading Fabric.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fabric import task  # fabfiles can take everything from here

    from .config import MuxConfig
    from .connection import MuxConnection
    from .exceptions import MuxError
    from .executor import MuxExecutor
    from .release import __version__

__all__ = ["MuxConfig", "MuxConnection", "MuxError", "MuxExecutor", "__version__", "task"]

_WHERE = {
    "task": "fabric",
    "MuxConfig": "fabric_mux.config",
    "MuxConnection": "fabric_mux.connection",
    "MuxError": "fabric_mux.exceptions",
    "MuxExecutor": "fabric_mux.executor",
    "__version__": "fabric_mux.release",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'fabric_mux' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value
