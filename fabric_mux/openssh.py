"""Which OpenSSH the throwaway servers and their clients use: the system's, or
the build that :data:`OPENSSH_VARIABLE` names."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = [
    "OPENSSH_VARIABLE",
    "SshdNotFound",
    "find_sshd",
    "openssh_prefix",
    "use_openssh_from_environment",
]

_SEARCH_DIRS = ("/usr/sbin", "/usr/local/sbin")

#: The environment variable naming the OpenSSH to test with: a prefix holding
#: ``bin/ssh``, ``bin/ssh-keygen`` and ``sbin/sshd`` (``/opt/openssh-8.0``, say).
#: Unset or empty: the system's.
OPENSSH_VARIABLE = "FMUX_OPENSSH"
_PREFIX_PROGRAMS = ("bin/ssh", "bin/ssh-keygen", "sbin/sshd")


class SshdNotFound(RuntimeError):
    """No ``sshd`` (or ``ssh-keygen``) binary was found."""


def openssh_prefix() -> Path | None:
    """The OpenSSH that :data:`OPENSSH_VARIABLE` names; None when it is unset.

    :raises SshdNotFound: it names a folder without ``bin/ssh``,
        ``bin/ssh-keygen`` and ``sbin/sshd``.
    """
    value = os.environ.get(OPENSSH_VARIABLE)
    if not value:
        return None
    prefix = Path(value).absolute()
    missing = [name for name in _PREFIX_PROGRAMS if not os.access(prefix / name, os.X_OK)]
    if missing:
        raise SshdNotFound(f"{OPENSSH_VARIABLE}={value} holds no {', '.join(missing)}")
    return prefix


def use_openssh_from_environment() -> Path | None:
    """Put the ``bin`` of :func:`openssh_prefix` first on ``PATH`` (clients found
    by name: ``ssh``, ``ssh-keygen``, ``ssh-add``, and ``mux.ssh_path``'s default);
    servers started here use its ``sbin/sshd``. Returns the prefix, if any."""
    prefix = openssh_prefix()
    if prefix is None:
        return None
    folder = str(prefix / "bin")
    path = os.environ.get("PATH", os.defpath).split(os.pathsep)
    if path[:1] != [folder]:
        os.environ["PATH"] = os.pathsep.join([folder, *(p for p in path if p != folder)])
    return prefix


def find_sshd(sshd_path: str | None) -> str:
    prefix = openssh_prefix()
    if sshd_path is None and prefix is not None:
        return str(prefix / "sbin/sshd")
    if sshd_path is not None:
        found = shutil.which(sshd_path)
        if found is None:
            raise SshdNotFound(f"sshd not found: {sshd_path}")
    else:
        search = os.pathsep.join([os.environ.get("PATH", os.defpath), *_SEARCH_DIRS])
        found = shutil.which("sshd", path=search)
        if found is None:
            raise SshdNotFound(f"sshd not found in PATH, {', '.join(_SEARCH_DIRS)}")
    # sshd re-executes itself for each connection, which needs an absolute path.
    return os.path.abspath(found)
