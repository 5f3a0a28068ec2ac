"""Host lists in files (``-H @FILE``): read only where nobody else could have written them.

A host list decides where a run goes, with your keys, your agent and the sudo
password you type: whoever can change the list chooses that. So, as OpenSSH
trusts its own config file, a host file is read only if it belongs to you (or
root) and nobody else can write to it, and no folder on its way could let
another user swap it: each folder above it belongs to you or root and is
writable by nobody else, except a sticky folder such as ``/tmp``, where others
cannot rename what is yours. Group write is fine where the group is your own
private one (its only member is you), as Debian's OpenSSH allows. Links on the
way must belong to root or you. This covers the failed-hosts file too, which
fabric-mux writes into a folder of yours alone (see :mod:`fabric_mux.failedhosts`).
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from pathlib import Path

from invoke.exceptions import Exit

from .controldir import PathRefused, walk
from .exceptions import BadHostList, HostListUnsafe
from .hostlist import expand_all, split_hosts
from .peers import user_name

__all__ = ["hosts_in", "others_can_write", "trusted_host_file"]


def others_can_write(path: Path, info: os.stat_result, *, sticky_ok: bool = True) -> str | None:
    """Why another user could change what is at ``path`` (or, for a folder,
    swap what is in it); None if nobody can."""
    if info.st_uid not in (0, os.geteuid()):
        return f"{path} belongs to {user_name(info.st_uid)}"
    mode = stat.S_IMODE(info.st_mode)
    if sticky_ok and stat.S_ISDIR(info.st_mode) and info.st_mode & stat.S_ISVTX:
        return None
    if mode & 0o002 or (mode & 0o020 and not _private_group(info.st_gid, info.st_uid)):
        return f"{path} has mode {mode:04o}: others can write to it"
    return None


def _private_group(gid: int, uid: int) -> bool:
    """Whether ``gid`` is ``uid``'s own group: no other account has it, as its
    primary group or as a member (Debian's OpenSSH ``secure_permissions``)."""
    try:
        group = grp.getgrgid(gid)
        owner = pwd.getpwuid(uid).pw_name
    except KeyError:
        return False
    if any(member != owner for member in group.gr_mem):
        return False
    members = set(group.gr_mem)
    for account in pwd.getpwall():
        if account.pw_gid == gid:
            if account.pw_uid != uid:
                return False
            members.add(account.pw_name)
    return members == {owner}


def _unsafe(path: str, why: str) -> HostListUnsafe:
    return HostListUnsafe(
        f"the host list {path} is not safe to read: {why}, so another user could choose "
        "where this run goes; keep host lists where only you can write"
    )


def trusted_host_file(path: str) -> Path:
    """The host file at ``path`` (``~`` expanded, links resolved), once it and every
    folder on its way are known to be writable by nobody else; as given if it
    does not exist (reading it then says so).

    :raises HostListUnsafe: naming the first file, folder or link that fails.
    """
    given = Path(os.path.expanduser(path)).absolute()
    try:
        real = walk(given, others_can_write)
    except PathRefused as refused:
        if refused.unsafe:
            raise _unsafe(path, refused.why) from None
        return given  # not readable anyway: the read says why
    try:
        info = os.lstat(real)
    except OSError:
        return real
    why = others_can_write(real, info, sticky_ok=False)
    if why:
        raise _unsafe(path, why)
    return real


def hosts_in(path: str) -> list[str]:
    """The hosts listed in a file: one a line (or several, comma-separated, and
    ranges: ``web[01-40]``), blank lines and ``#`` comments skipped; UTF-8, with
    or without a byte-order mark. Read only if nobody else could have written it
    (see the module's notes)."""
    real = trusted_host_file(path)
    try:
        fd = os.open(real, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as listing:
            if others_can_write(real, os.fstat(listing.fileno()), sticky_ok=False):
                # Swapped between the check and the open.
                raise _unsafe(path, f"{real} changed while it was checked")
            data = listing.read()
    except OSError as exc:
        raise Exit(
            f"fabric-mux: cannot read the host list {path}: {exc.strerror}", code=1
        ) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        at = data[: exc.start].count(b"\n") + 1
        raise Exit(
            f"fabric-mux: the host list {path} is not UTF-8 text (line {at}, byte "
            f"0x{data[exc.start]:02x}): save it as UTF-8",
            code=1,
        ) from None
    # Lines end at \n (or \r\n) only: str.splitlines() also ends them at \r, \x0b,
    # \x0c, \x85 and \u2028, making two hosts of a name with a stray one inside,
    # which is refused instead. A line may name several hosts, and ranges
    # (web[01-40]), as -H does.
    hosts: list[str] = []
    for number, ended in enumerate(text.split("\n"), start=1):
        line = ended[:-1] if ended.endswith("\r") else ended
        try:
            hosts.extend(expand_all(split_hosts(line.split("#", 1)[0])))
        except BadHostList as exc:
            raise BadHostList(f"{path}, line {number}: {exc}") from None
    return list(dict.fromkeys(hosts))
