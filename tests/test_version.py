"""``ssh -V``: asked once a process; too old an ssh, or another program, is refused clearly."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import fabric
import pytest

from fabric_mux import MuxConnection
from fabric_mux import version as versions
from fabric_mux.exceptions import UnsupportedSsh
from fabric_mux.version import parse_version, ssh_version


@pytest.fixture(autouse=True)
def fresh_versions() -> Iterator[None]:
    versions.forget()
    yield
    versions.forget()


def fake_ssh(folder: Path, said: str) -> tuple[Path, Path]:
    """An ``ssh`` that says ``said`` to ``-V`` and counts how often it was run."""
    runs = folder / "runs"
    ssh = folder / "ssh"
    ssh.write_text(f"#!/bin/sh\necho run >> '{runs}'\necho '{said}' >&2\n")
    ssh.chmod(0o755)
    return ssh, runs


@pytest.mark.parametrize(
    ("said", "number", "forces", "marks"),
    [
        ("OpenSSH_8.0p1, OpenSSL 3.0.19 27 Jan 2026", (8, 0), False, False),
        ("OpenSSH_8.4p1 Debian-5+deb11u3, OpenSSL 1.1.1w  11 Sep 2023", (8, 4), True, False),
        ("OpenSSH_9.2p1 Debian-2+deb12u10, OpenSSL 3.0.19 27 Jan 2026", (9, 2), True, True),
        ("OpenSSH_9.8p1, LibreSSL 3.3.6", (9, 8), True, True),  # macOS
        ("OpenSSH_10.5p1, OpenSSL 3.0.19 27 Jan 2026", (10, 5), True, True),
    ],
)
def test_versions_and_what_they_can_do(
    said: str, number: tuple[int, int], forces: bool, marks: bool
) -> None:
    version = parse_version(said)
    assert version is not None
    assert (version.number, version.forces_askpass, version.marks_server_prompts) == (
        number,
        forces,
        marks,
    )


def test_ssh_is_asked_once_a_process(tmp_path: Path) -> None:
    ssh, runs = fake_ssh(tmp_path, "OpenSSH_8.0p1, OpenSSL 1.1.1k  FIPS 25 Mar 2021")
    assert [ssh_version(str(ssh)).number for _ in range(3)] == [(8, 0)] * 3
    assert runs.read_text() == "run\n"


@pytest.mark.parametrize(
    ("said", "message"),
    [
        (
            "OpenSSH_6.7p1 Ubuntu-1, OpenSSL 1.0.1f 6 Jan 2014",
            r"is OpenSSH 6\.7 .*needs 6\.8 or newer",
        ),
        ("Dropbear v2022.83", r"is not OpenSSH \(ssh -V says 'Dropbear"),
    ],
)
def test_too_old_an_ssh_or_another_program_is_refused(
    tmp_path: Path, said: str, message: str
) -> None:
    ssh, _ = fake_ssh(tmp_path, said)
    with pytest.raises(UnsupportedSsh, match=message):
        ssh_version(str(ssh))


def test_a_connection_with_too_old_an_ssh_says_so_before_anything_else(tmp_path: Path) -> None:
    ssh, runs = fake_ssh(tmp_path, "OpenSSH_6.6.1p1, OpenSSL 1.0.1e-fips 11 Feb 2013")
    config = fabric.Config(
        overrides={"mux": {"ssh_path": str(ssh), "control_dir": str(tmp_path / "c")}}
    )
    with pytest.raises(UnsupportedSsh, match=r"is OpenSSH 6\.6 .*needs 6\.8 or newer"):
        MuxConnection("web1", config=config).run("true")
    assert runs.read_text() == "run\n"  # ssh -V only: no ssh -G, no master


def test_the_ssh_under_test_is_in_the_tested_range() -> None:
    said = subprocess.run(["ssh", "-V"], capture_output=True, text=True, check=True).stderr
    version = parse_version(said)
    assert version is not None
    assert versions.TESTED[0] <= version.number <= versions.TESTED[1], said
