"""Which OpenSSH the ``ssh`` program is, asked once a process (``ssh -V``).

What differs between the versions users have (RHEL 8 ships 8.0), as far as
fabric-mux is concerned:

- ``ssh -G``, which every connection needs, exists from 6.8: older ones are
  refused with :class:`~fabric_mux.exceptions.UnsupportedSsh`.
- ``SSH_ASKPASS_REQUIRE=force`` exists from 8.4; before, ssh asks its askpass
  program only with no terminal and ``DISPLAY`` set.
- From 8.5 ssh puts ``(user@host) `` before every keyboard-interactive prompt
  the server writes; before, a server can word a prompt exactly like ssh's own.
"""

from __future__ import annotations

import re
import subprocess
from typing import NamedTuple

from .exceptions import SshNotFound, UnsupportedSsh
from .process import current

__all__ = ["OLDEST", "TESTED", "SshVersion", "forget", "parse_version", "ssh_version"]

#: The oldest OpenSSH that can work (``ssh -G``).
OLDEST = (6, 8)
#: The range the test suite runs against.
TESTED = ((8, 0), (10, 5))

_VERSION = re.compile(r"OpenSSH_(\d+)\.(\d+)")


class SshVersion(NamedTuple):
    """An OpenSSH client's version, and what it can do."""

    major: int
    minor: int
    #: ``ssh -V``'s own words, for messages.
    said: str

    @property
    def number(self) -> tuple[int, int]:
        return (self.major, self.minor)

    def __str__(self) -> str:
        return f"OpenSSH {self.major}.{self.minor}"

    @property
    def forces_askpass(self) -> bool:
        """Whether ssh knows ``SSH_ASKPASS_REQUIRE=force`` (8.4)."""
        return self.number >= (8, 4)

    @property
    def marks_server_prompts(self) -> bool:
        """Whether ssh puts ``(user@host) `` before a server's keyboard-interactive
        prompts (8.5), so that none can pass for ssh's own."""
        return self.number >= (8, 5)


def parse_version(said: str) -> SshVersion | None:
    """The version in ``ssh -V``'s words; None if they are not OpenSSH's."""
    found = _VERSION.search(said)
    if found is None:
        return None
    return SshVersion(int(found.group(1)), int(found.group(2)), said.strip())


def ssh_version(ssh: str) -> SshVersion:
    """The version of the OpenSSH client ``ssh``, asked once a process.

    :raises UnsupportedSsh: it is older than 6.8, or not OpenSSH.
    :raises SshNotFound: there is no such program.
    """
    state = current()
    with state.ssh_versions_lock:
        known: SshVersion | None = state.ssh_versions.get(ssh)
    if known is not None:
        return known
    try:
        proc = subprocess.run(
            [ssh, "-V"], stdin=subprocess.DEVNULL, capture_output=True, check=False
        )
    except FileNotFoundError:
        raise SshNotFound(f"no ssh program at {ssh}") from None
    said = (proc.stderr + proc.stdout).decode("utf-8", "replace").strip()
    version = parse_version(said)
    if version is None:
        raise UnsupportedSsh(
            f"{ssh} is not OpenSSH (ssh -V says {said!r}): fabric-mux needs OpenSSH's "
            f"client, {OLDEST[0]}.{OLDEST[1]} or newer"
        )
    if version.number < OLDEST:
        raise UnsupportedSsh(
            f"{ssh} is {version} ({said}): fabric-mux needs "
            f"{OLDEST[0]}.{OLDEST[1]} or newer (for ssh -G; tested: "
            f"{TESTED[0][0]}.{TESTED[0][1]} to {TESTED[1][0]}.{TESTED[1][1]})"
        )
    with state.ssh_versions_lock:
        state.ssh_versions[ssh] = version
    return version


def forget() -> None:
    """Ask again next time (tests)."""
    state = current()
    with state.ssh_versions_lock:
        state.ssh_versions.clear()
