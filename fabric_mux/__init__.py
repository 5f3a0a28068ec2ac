"""One SSH login per host for Fabric: every session goes through an OpenSSH master."""

from __future__ import annotations

__version__ = "0.1.0"

from fabric import task  # fabfiles can take everything from here

from .config import MuxConfig
from .connection import MuxConnection
from .exceptions import MuxError
from .executor import MuxExecutor

__all__ = ["MuxConfig", "MuxConnection", "MuxError", "MuxExecutor", "__version__", "task"]
