"""The local account that this project's own suite, bench and demo log in to.

Not shipped with fabric-mux: it administers the machine (useradd, chpasswd,
sudoers), which only a test machine run as root should see. As root, the tests
lend the account ``fmuxtest`` (``FMUX_TEST_USER``) a fresh random password and
a sudo rule for the run only, and take both back whatever way the run ends;
``remove_account`` deletes it (``.venv/bin/python -m devtools.accounts remove`` in a clone).
"""

from __future__ import annotations

import fcntl
import os
import pwd
import secrets
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from fabric_mux.testing import unwinding_on_signals

__all__ = [
    "TEST_USER",
    "Account",
    "ensure_account",
    "lent_account",
    "remove_account",
    "revoke_account",
    "revoke_unless_lent",
]

#: The account the suite, the bench and the demo log in to when run as root.
TEST_USER = os.environ.get("FMUX_TEST_USER", "fmuxtest")

# One lock for every account: parallel test workers and a bench would race useradd.
# Root only, so under /run (not a world-writable folder where a planted link could
# point it elsewhere); opened without following links all the same.
_ACCOUNT_LOCK = "/run/fmux-test-account.lock"
_SUDOERS_DIR = Path("/etc/sudoers.d")


def ensure_account(name: str, password: str | None = None, sudoer: bool = False) -> str:
    """Make sure a local account exists for a test server to let in; root only.

    A new account gets ``/bin/bash`` and the system's skeleton start-up files:
    a light shell, unlike root's on machines whose ``.bashrc`` runs pyenv
    (+100 ms a command, which would swamp any timing). Calling it again
    changes nothing that is already right; concurrent callers take turns.

    :param name: the account's name.
    :param password: becomes the account's password. ``None`` keeps an
        existing one; a locked account (what ``useradd`` makes) gets ``*``,
        which no password matches, as sshd without PAM refuses locked accounts.
    :param sudoer: let the account run anything through ``sudo`` (with its
        password), where sudo is installed. ``False`` grants nothing but does
        not revoke an earlier grant.
    :returns: ``name``.
    :raises PermissionError: when not running as root.
    :raises ValueError: for a password holding a newline.
    :raises RuntimeError: when ``useradd``, ``chpasswd``, ``usermod`` or ``visudo`` fails.
    """
    if os.geteuid() != 0:
        raise PermissionError(f"only root can make the account {name!r}")
    if password is not None and "\n" in password:
        raise ValueError("a password cannot hold a newline")
    fd = os.open(_ACCOUNT_LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            pwd.getpwnam(name)
        except KeyError:
            _run(["useradd", "-m", "-s", "/bin/bash", name])
            print(
                f"devtools.accounts: made the local account {name!r} for test servers to let "
                f"in ({_this_python()} -m devtools.accounts remove {name} removes it)",
                file=sys.stderr,
                flush=True,
            )
        if password is not None:
            _run(["chpasswd"], stdin=f"{name}:{password}\n")
        elif _password_locked(name):
            _run(["usermod", "-p", "*", name])
        if sudoer:
            _write_sudoers(name)
    return name


class Account(NamedTuple):
    """A local account lent to tests by :func:`lent_account`."""

    name: str
    #: Fresh for each loan; None when the loan set no password.
    password: str | None


@contextmanager
def lent_account(name: str, *, password: bool = True, sudoer: bool = False) -> Iterator[Account]:
    """An account for a test run to log in to, with nothing left open afterwards; root only.

    Made if missing (see :func:`ensure_account`); it is the tests' own, so
    whatever password it had is replaced. For the loan it gets a fresh random
    password (never one written anywhere) and, with ``sudoer``, a sudo rule;
    when the block ends, however it ends, the rule is removed and the
    password replaced by ``*``, which no password matches. While it lasts,
    SIGTERM and SIGHUP (a CI timeout, a closed terminal) end the process
    through the block's cleanup rather than around it. Loans of one account
    take turns: a second test run waits until the first one's ends.
    """
    secret = secrets.token_urlsafe(24) if password else None
    with unwinding_on_signals(), _loan_lock(name):
        try:
            ensure_account(name, secret, sudoer=sudoer)
            yield Account(name, secret)
        finally:
            revoke_account(name)


def _loan_lock_path(name: str) -> str:
    return f"/run/fmux-test-loan-{name}.lock"


@contextmanager
def _loan_lock(name: str, *, wait: bool = True) -> Iterator[bool]:
    """One loan of an account at a time: a second test run waits for the first to end,
    rather than change the password under it, and says that it waits. Yields
    whether the lock is held (False only with ``wait=False``, when another has it)."""
    path = _loan_lock_path(name)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                yield False
                return
            print(
                f"devtools.accounts: another run has lent the account {name!r}; waiting for "
                f"it to end (FMUX_TEST_USER=another-name runs beside it)",
                file=sys.stderr,
                flush=True,
            )
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield True
    finally:
        os.close(fd)


def revoke_unless_lent(name: str) -> bool:
    """:func:`revoke_account`, unless a run has the account on loan now (that run
    takes it back when it ends): for clean-ups outside any loan. True if revoked."""
    with _loan_lock(name, wait=False) as held:
        if held:
            revoke_account(name)
        return held


def revoke_account(name: str) -> None:
    """Take back what a loan gave: our sudo rule, and any password (``*`` instead).

    The caller holds the loan, or knows no run does (see :func:`revoke_unless_lent`).
    """
    sudoers = _sudoers_file(name)
    if sudoers.is_file() and sudoers.read_text() == _sudo_rule(name):
        sudoers.unlink()  # ours; a rule someone else wrote under that name stays
    try:
        pwd.getpwnam(name)
    except KeyError:
        return
    _run(["usermod", "-p", "*", name])


def remove_account(name: str) -> None:
    """Delete an account and its home, with any sudo rule of ours and its loan lock
    file (unless a run holds it now); root only."""
    _sudoers_file(name).unlink(missing_ok=True)
    try:
        pwd.getpwnam(name)
    except KeyError:
        pass
    else:
        _run(["userdel", "-r", name])
    _drop_loan_lock(name)


def _drop_loan_lock(name: str) -> None:
    try:
        fd = os.open(_loan_lock_path(name), os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.unlink(_loan_lock_path(name))
    except OSError:
        pass  # held: by the caller, or another run, which outlives it
    finally:
        os.close(fd)


def _run(argv: list[str], stdin: str = "") -> None:
    result = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({result.returncode}): {result.stderr.strip()}")


def _password_locked(name: str) -> bool:
    for line in Path("/etc/shadow").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name and len(fields) > 1:
            return fields[1].startswith("!")
    return False


def _sudo_rule(name: str) -> str:
    return f"{name} ALL=(ALL:ALL) ALL\n"


def _sudoers_file(name: str) -> Path:
    # sudo skips files whose names hold a dot.
    return _SUDOERS_DIR / name.replace(".", "_")


def _write_sudoers(name: str) -> None:
    if shutil.which("visudo") is None:
        # No sudo here: what needs it fails with "sudo: command not found".
        return
    sudoers = _sudoers_file(name)
    text = _sudo_rule(name)
    if sudoers.is_file() and sudoers.read_text() == text:
        if sudoers.stat().st_mode & 0o777 == 0o440:
            return
    # A half-written draft does no harm: its name holds a dot.
    draft = sudoers.with_name(f".{sudoers.name}.new")
    draft.write_text(text)
    draft.chmod(0o440)
    try:
        _run(["visudo", "-cf", str(draft)])
    except RuntimeError:
        draft.unlink(missing_ok=True)
        raise
    os.replace(draft, sudoers)


def _this_python() -> str:
    """This Python as one would type it here: ``.venv/bin/python`` in a clone (the
    system's python3 has no Fabric to run this module with)."""
    relative = os.path.relpath(sys.executable)
    return shlex.quote(sys.executable if relative.startswith("..") else relative)


def main(argv: list[str]) -> int:
    """``.venv/bin/python -m devtools.accounts revoke|remove [NAME]`` (NAME: :data:`TEST_USER`)."""
    if not argv or argv[0] not in ("revoke", "remove") or len(argv) > 2:
        print(f"usage: {_this_python()} -m devtools.accounts revoke|remove [NAME]", file=sys.stderr)
        return 2
    name = argv[1] if len(argv) > 1 else TEST_USER
    if argv[0] == "remove":
        with _loan_lock(name):
            remove_account(name)
            # Its loan lock too, held now: nothing of the account is left in /run.
            Path(_loan_lock_path(name)).unlink(missing_ok=True)
        print(f"removed the account {name!r}")
    elif not revoke_unless_lent(name):
        print(f"{name!r} is on loan to a running test run, which takes it back when it ends")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
