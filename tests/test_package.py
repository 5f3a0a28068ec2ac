"""The package as a packager and a user meet it: one version, its license, helpers
that answer --help, and the ranges of what it depends on."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import metadata, requires, version
from pathlib import Path

import pytest

import fabric_mux

ROOT = Path(__file__).resolve().parent.parent


def test_one_version_everywhere() -> None:
    top = re.search(r"^## (\S+)", (ROOT / "CHANGELOG.md").read_text(), re.MULTILINE)
    assert top is not None
    assert fabric_mux.__version__ == version("fabric-mux") == top.group(1)


def test_the_license_is_an_spdx_expression_with_its_file() -> None:
    info = metadata("fabric-mux")
    assert info["License-Expression"] == "BSD-2-Clause"
    assert "BSD 2-Clause License" in (ROOT / "LICENSE").read_text()


def test_the_dependency_ranges_are_the_ones_the_matrix_runs() -> None:
    wanted = {"fabric": ">=3.2,<4", "invoke": ">=2.1,<4", "paramiko": ">=3.4.1"}
    found = {}
    for line in requires("fabric-mux") or []:
        if "extra ==" in line:
            continue
        name, spec = re.match(r"([A-Za-z0-9_.-]+)\s*(.*)", line).groups()  # type: ignore[union-attr]
        found[name.lower()] = ",".join(sorted(spec.replace(" ", "").split(",")))
    assert found == {name: ",".join(sorted(spec.split(","))) for name, spec in wanted.items()}


@pytest.mark.parametrize(
    "program", ["fabmux", "fabric-mux", "fabric-mux-askpass", "fabric-mux-shell"]
)
def test_every_console_script_answers_help(program: str) -> None:
    path = Path(sys.executable).with_name(program)
    done = subprocess.run(
        [str(path), "--help"],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "usage" in done.stdout.lower() and not done.stderr
