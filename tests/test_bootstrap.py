"""script/bootstrap: one run at a time, clear words for a broken .venv link, what a run
as root leaves in another account's clone, and the ssh service a package install starts.

Each test works on a copy of the script in a throwaway clone whose .venv is made and
stamped already, so that no run installs anything; package managers and systemctl are
stand-ins that log what they were asked.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """A clone with its .venv made and installed, as far as bootstrap can tell."""
    folder = tmp_path / "clone"
    (folder / "script").mkdir(parents=True)
    shutil.copy(ROOT / "script" / "bootstrap", folder / "script" / "bootstrap")
    shutil.copy(ROOT / "pyproject.toml", folder / "pyproject.toml")
    # No pip installed (nothing here runs it): a stand-in that imports, which is what
    # bootstrap asks of a working .venv. (The base Python may have no pip at all:
    # Debian's python3 without python3-pip.)
    venv = folder / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    stand_in = venv / "lib" / version / "site-packages" / "pip"
    stand_in.mkdir(parents=True)
    (stand_in / "__init__.py").write_text("")
    made_from = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import hashlib, sys\n"
            "with open('pyproject.toml', 'rb') as f:\n"
            "    print(hashlib.sha256(f.read()).hexdigest(), sys.version.split()[0],"
            " sys.base_prefix)",
        ],
        cwd=folder,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (venv / ".fabric-mux-installed").write_text(f"{made_from}test\n")
    return folder


def bootstrap(
    clone: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", "script/bootstrap", *args],
        cwd=clone,
        env=env or _env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def _env() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if name != "FMUX_OPENSSH"}


def test_a_clone_with_everything_in_place_says_nothing(clone: Path) -> None:
    done = bootstrap(clone, "--test")
    assert (done.returncode, done.stderr) == (0, "")


def test_two_bootstraps_in_one_clone_take_turns(clone: Path) -> None:
    with (clone / ".bootstrap.lock").open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another bootstrap, making .venv
        child = subprocess.Popen(
            ["sh", "script/bootstrap", "--test"],
            cwd=clone,
            env=_env(),
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stderr is not None
            said = child.stderr.readline()
            assert said == (
                "bootstrap: another bootstrap is running in this clone: waiting for it to finish\n"
            )
            assert child.poll() is None  # waiting, not working beside it
        except BaseException:
            child.kill()
            child.wait()
            raise
    assert child.wait(timeout=60) == 0  # its turn came when the other let go
    assert child.stderr is not None and child.stderr.read() == ""


def test_a_venv_link_to_nothing_is_one_clear_line(clone: Path, tmp_path: Path) -> None:
    shutil.rmtree(clone / ".venv")
    gone = tmp_path / "venvs" / "fabric-mux"
    (clone / ".venv").symlink_to(gone)
    done = bootstrap(clone)
    assert (done.returncode, done.stderr) == (
        1,
        f"bootstrap: .venv is a link to {gone}, which does not exist: make that folder "
        "(bootstrap then makes the virtualenv there) or remove the link\n",
    )


@pytest.fixture
def as_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("what root leaves behind, and package installs, need root")


def test_a_run_as_root_in_another_accounts_clone_says_what_is_roots_now(
    as_root: None, clone: Path, sshd_user: str
) -> None:
    account = pwd.getpwnam(sshd_user)
    for path in [clone, *clone.rglob("*")]:
        if ".venv" not in path.relative_to(clone).parts:
            os.lchown(path, account.pw_uid, account.pw_gid)
    group = Path(clone).group()
    done = bootstrap(clone, "--root-note")
    assert (done.returncode, done.stderr) == (
        0,
        f"bootstrap: ran as root in {sshd_user}'s clone: .venv now root's; "
        f"sudo chown -R {sshd_user}:{group} . gives them back\n",
    )
    os.lchown(clone, 0, 0)  # root's own clone: nothing to say
    assert bootstrap(clone, "--root-note").stderr == ""


STANDINS = {
    "apt-get": 'echo "apt-get $*" >> "$LOG"\n',
    "apt-cache": 'echo "  Candidate: 1:9.2p1-2"\n',
    "systemctl": textwrap.dedent(
        """\
        echo "systemctl $*" >> "$LOG"
        case $1 in
            is-system-running) echo "$SYSTEM"; [ "$SYSTEM" = running ] ;;
            is-active) [ "$SSH_WAS" = active ] ;;
        esac
        """
    ),
}


@pytest.mark.parametrize(
    ("system", "ssh_was", "disabled", "said"),
    [
        ("running", "inactive", True, "bootstrap: stopped and disabled the ssh service"),
        ("running", "active", False, None),
        ("offline", "inactive", False, "bootstrap: installed openssh-server for its sshd program"),
    ],
)
def test_installing_openssh_server_leaves_no_sshd_running_that_was_not_before(
    as_root: None,
    clone: Path,
    tmp_path: Path,
    system: str,
    ssh_was: str,
    disabled: bool,
    said: str | None,
) -> None:
    if not shutil.which("unshare") or not Path("/etc/debian_version").exists():
        pytest.skip("needs unshare, and a Debian whose apt-get bootstrap uses")
    standins = tmp_path / "bin"
    standins.mkdir()
    for name, body in STANDINS.items():
        (standins / name).write_text(f"#!/bin/sh\n{body}")
        (standins / name).chmod(0o755)
    log = tmp_path / "log"
    env = {
        **_env(),
        "PATH": f"{standins}:/usr/bin:/bin",  # no sbin: no sshd on the way
        "LOG": str(log),
        "SYSTEM": system,
        "SSH_WAS": ssh_was,
    }
    # The system's sshd hidden, in a mount namespace of the run's own.
    hide = " && ".join(
        f"mount --bind /dev/null {path}"
        for path in ("/usr/sbin/sshd", "/usr/local/sbin/sshd")
        if Path(path).exists()
    )
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"{hide or 'true'} && exec sh script/bootstrap --test"],
        cwd=clone,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    calls = log.read_text().splitlines()
    assert "apt-get install -y -q --no-install-recommends openssh-server" in calls
    assert ("systemctl disable --now ssh.service" in calls) == disabled
    assert ("systemctl disable --now ssh.socket" in calls) == disabled
    lines = done.stderr.splitlines()
    assert lines[0] == "bootstrap: apt-get install openssh-server"
    if said is None:
        assert len(lines) == 1
    else:
        assert len(lines) == 2 and lines[1].startswith(said), done.stderr
