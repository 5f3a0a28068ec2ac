"""A command line as the remote shell reads it: the environment exported first,
each value quoted once, names no shell could hold refused."""

from __future__ import annotations

import re
import shlex
from typing import Any

__all__ = ["check_env_names", "remote_command"]

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def check_env_names(env: dict[str, Any]) -> None:
    """Refuse a name no shell could hold (sent inline or as a session's variable)."""
    for name in env:
        if not _ENV_NAME.match(name):
            raise ValueError(f"not a shell variable name: {name!r}")


def remote_command(command: str, env: dict[str, Any]) -> str:
    """``command`` with ``env`` exported first, each value quoted once for the remote shell."""
    if not env:
        return command
    check_env_names(env)
    exports = " ".join(f"{name}={shlex.quote(str(value))}" for name, value in sorted(env.items()))
    return f"export {exports} && {command}"
