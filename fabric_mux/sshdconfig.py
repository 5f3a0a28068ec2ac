"""The files a throwaway server is written with: its ``sshd_config``, and the
client ``ssh_config`` that reaches it (directly, or through a latency relay)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "FIXED_KEYWORDS",
    "HOST",
    "config_path",
    "overridden_keywords",
    "quote",
    "relayed_host",
    "ssh_config_text",
    "sshd_config_text",
]

#: The address every throwaway server listens on.
HOST = "127.0.0.1"

# The harness depends on these: the caller may not replace them.
FIXED_KEYWORDS = frozenset({"port", "listenaddress", "pidfile"})

# sshd before 8.7 reads ChallengeResponseAuthentication, the old name of
# KbdInteractiveAuthentication (and turns keyboard-interactive on by it unless
# told otherwise); later ones take it as an alias. Both are written, as one.
_KEYBOARD_NAMES = ("KbdInteractiveAuthentication", "ChallengeResponseAuthentication")


def quote(value: str) -> str:
    """Quote a value for ssh_config/sshd_config, whose lines are split like argv."""
    if value and not any(c.isspace() or c in "\"'\\#" for c in value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def config_path(path: Path) -> str:
    """Quote a path for an option that expands %-tokens."""
    return quote(str(path).replace("%", "%%"))


def _keyword(line: str) -> str:
    # Lines read "Keyword value" or "Keyword=value"; Subsystem is keyed by its name.
    words = line.strip().replace("=", " ", 1).split()
    if not words:
        return ""
    keyword = words[0].lower()
    if keyword == "subsystem" and len(words) > 1:
        return f"subsystem {words[1]}"
    if keyword == _KEYBOARD_NAMES[1].lower():
        return _KEYBOARD_NAMES[0].lower()
    return keyword


def _both_keyboard_names(options: Sequence[str]) -> list[str]:
    """``options`` where a keyboard-interactive line (either name, before any
    ``Match``) comes with its other name too: every sshd then reads the value."""
    out: list[str] = []
    for index, line in enumerate(options):
        out.append(line)
        words = line.strip().replace("=", " ", 1).split()
        if words and words[0].lower() == "match":
            return out + list(options[index + 1 :])
        names = [name.lower() for name in _KEYBOARD_NAMES]
        if words and words[0].lower() in names and len(words) > 1:
            other = _KEYBOARD_NAMES[1 - names.index(words[0].lower())]
            if not any(o.strip().lower().startswith(other.lower()) for o in options):
                out.append(f"{other} {words[1]}")
    return out


def overridden_keywords(options: Sequence[str]) -> set[str]:
    keywords: set[str] = set()
    for line in options:
        keyword = _keyword(line)
        if keyword == "match":
            # What follows is conditional, not a replacement of the defaults.
            break
        if keyword and not keyword.startswith("#"):
            keywords.add(keyword)
    return keywords


def sshd_config_text(
    *,
    port: int,
    host_key: Path,
    pid_file: Path,
    authorized_keys: Path,
    options: Sequence[str],
    overridden: set[str],
) -> str:
    defaults = [
        f"AuthorizedKeysFile {config_path(authorized_keys)}",
        "StrictModes no",
        "UsePAM no",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        *(f"{name} no" for name in _KEYBOARD_NAMES),
        "LogLevel VERBOSE",
        "MaxStartups 100",
        "AllowTcpForwarding yes",
        "PermitRootLogin yes",
        "AcceptEnv FMUX_*",
        # Login shells would otherwise print /etc/motd and the last login.
        "PrintMotd no",
        "PrintLastLog no",
        "Subsystem sftp internal-sftp",
    ]
    # sshd keeps the first value of most keywords and rejects a second Subsystem
    # of one name, so a caller's option replaces the default rather than follow it.
    lines = [
        "# Written by fabric_mux.testing.",
        f"Port {port}",
        f"ListenAddress {HOST}",
        f"HostKey {quote(str(host_key))}",
        f"PidFile {quote(str(pid_file))}",
        *(line for line in defaults if _keyword(line) not in overridden),
        *_both_keyboard_names(options),
    ]
    return "\n".join(lines) + "\n"


def relayed_host(alias: str, relay_port: int, port: int, user: str) -> str:
    """A Host block that reaches the server through a relay, its host key known as usual."""
    return (
        f"Host {alias}\n"
        f"    HostName {HOST}\n"
        f"    Port {relay_port}\n"
        f"    HostKeyAlias [{HOST}]:{port}\n"
        f"    User {user}\n"
    )


def ssh_config_text(
    *,
    aliases: Sequence[str],
    port: int,
    user: str,
    client_key: Path,
    known_hosts: Path,
    key_port: int,
) -> str:
    # Through a relay, the port differs from the one known_hosts names the key by.
    key_alias = f"    HostKeyAlias [{HOST}]:{key_port}\n" if key_port != port else ""
    return (
        f"Host {' '.join(aliases)}\n"
        f"    HostName {HOST}\n"
        f"    Port {port}\n"
        f"{key_alias}"
        f"    User {user}\n"
        "Host *\n"
        f"    IdentityFile {config_path(client_key)}\n"
        "    IdentitiesOnly yes\n"
        f"    UserKnownHostsFile {config_path(known_hosts)}\n"
        "    GlobalKnownHostsFile /dev/null\n"
        "    StrictHostKeyChecking yes\n"
        "    BatchMode yes\n"
    )
