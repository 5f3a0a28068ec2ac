"""The dependency matrix: the test files where versions differ, run against each
combination of Python, fabric, invoke and paramiko that the package's ranges admit
at their edges (``python3 -m devtools.matrix [NAME...]``, ``inv matrix``).

Each combination gets a virtualenv of its own under ``.matrix/`` (made once,
its pins installed again only when they change), from the Python that pyenv
has for it. A pin of None takes the newest release the ranges admit, as pip
would for a user today: so a new release of fabric, invoke or paramiko is
tested the day CI next runs. A Python the machine lacks is said so, and fails
the run under ``CI``.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

__all__ = ["CI", "COMBINATIONS", "FILES", "Combination", "main", "run"]

ROOT = Path(__file__).resolve().parent.parent
VENVS = ROOT / ".matrix"


class Combination(NamedTuple):
    """One line of the matrix: a Python, and what each dependency is pinned to."""

    name: str
    python: str
    fabric: str | None = None
    invoke: str | None = None
    paramiko: str | None = None

    def pins(self) -> list[str]:
        pinned = (("fabric", self.fabric), ("invoke", self.invoke), ("paramiko", self.paramiko))
        return [f"{name}=={pin}" for name, pin in pinned if pin]

    def __str__(self) -> str:
        pins = ", ".join(self.pins()) or "what pip picks"
        return f"{self.name} (Python {self.python}, {pins})"


#: The edges of the ranges, and a Python each, 3.9 to 3.13.
COMBINATIONS = (
    Combination("oldest", "3.9", fabric="3.2.0", invoke="2.1.0", paramiko="3.4.1"),
    # invoke 3, as pip installs it beside fabric 3.2.0-3.2.2 (3.2.3 caps invoke at 2).
    Combination("invoke 3", "3.10", fabric="3.2.2", invoke=None),
    Combination("between", "3.12", fabric="3.2.1", invoke="2.2.0", paramiko="4.0.0"),
    # What pip picks today: the newest the ranges admit.
    Combination("newest", "3.13"),
)

#: What CI runs (the main run, on the machine's Python, is the suite itself).
CI = ("oldest", "invoke 3", "between", "newest")

#: The test files where versions differ: Python (subprocesses, threads and forks,
#: ptys and signals, entry points, the command line) and the dependencies (fab's
#: program and executor, invoke's runner and config, fabric's connection and groups,
#: paramiko's exceptions and SFTP client).
FILES = (
    "tests/test_upstream.py",
    "tests/test_package.py",
    "tests/test_argv.py",
    "tests/test_config.py",
    "tests/test_screen.py",
    "tests/test_early.py",
    "tests/test_fab.py",
    "tests/test_cli.py",
    "tests/test_transfer.py",
    "tests/test_files.py",
    "tests/test_parallel.py",
    "tests/test_fleet_ops.py",
    "tests/test_protocol.py",
    "tests/test_askpass.py",
    "tests/test_executor.py",
    "tests/test_exceptions.py",
    "tests/test_connection.py",
    "tests/test_collection.py",
    "tests/test_version.py",
    "tests/test_setups.py",
    "tests/test_plugin.py",
)


def python_for(version: str) -> Path | None:
    """pyenv's newest ``version`` (``3.9``: 3.9.18), or None."""
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    found = sorted(
        (p for p in root.glob(f"{version}.*") if (p / "bin" / "python3").exists()),
        key=lambda p: tuple(int(part) for part in p.name.split(".") if part.isdigit()),
    )
    return found[-1] / "bin" / "python3" if found else None


def _venv(combination: Combination, python: Path) -> Path:
    """The combination's virtualenv, made or brought up to date."""
    folder = VENVS / combination.name.replace(" ", "-")
    bin_python = folder / "bin" / "python"
    want = hashlib.sha256(
        "\n".join(
            [str(python), *combination.pins(), (ROOT / "pyproject.toml").read_text()]
        ).encode()
    ).hexdigest()
    stamp = folder / ".stamp"
    # A dependency left unpinned is asked of pip again each run: its newest release.
    unpinned = None in (combination.fabric, combination.invoke, combination.paramiko)
    if stamp.exists() and stamp.read_text() == want and not unpinned:
        return folder
    if not bin_python.exists():
        subprocess.run([str(python), "-m", "venv", str(folder)], check=True)
    install = [str(bin_python), "-m", "pip", "install", "-q", "--upgrade"]
    subprocess.run([*install, "-e", f"{ROOT}[test]", *combination.pins()], check=True)
    stamp.write_text(want)
    return folder


def run(combination: Combination, pytest_args: Sequence[str] = ()) -> int:
    """Run :data:`FILES` in the combination's virtualenv; pytest's exit code
    (5 when its Python is missing)."""
    python = python_for(combination.python)
    if python is None:
        print(f"matrix: no Python {combination.python} (pyenv): {combination} not run")
        return 5
    folder = _venv(combination, python)
    versions = subprocess.run(
        [
            str(folder / "bin" / "python"),
            "-c",
            "import fabric, invoke, paramiko, sys; print(sys.version.split()[0], "
            "fabric.__version__, invoke.__version__, paramiko.__version__)",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    print(
        f"matrix: {combination.name}: Python {versions[0]}, fabric {versions[1]}, "
        f"invoke {versions[2]}, paramiko {versions[3]}",
        flush=True,
    )
    argv = [str(folder / "bin" / "python"), "-m", "pytest", "-q", *FILES, *pytest_args]
    return subprocess.run(argv, cwd=ROOT, check=False).returncode


def main(argv: Sequence[str] | None = None) -> int:
    """``python3 -m devtools.matrix [--ci | NAME...] [-- PYTEST ARGS]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    pytest_args: list[str] = []
    if "--" in args:
        args, pytest_args = args[: args.index("--")], args[args.index("--") + 1 :]
    names = list(CI) if args in ([], ["--ci"]) else args
    known = {combination.name: combination for combination in COMBINATIONS}
    unknown = [name for name in names if name not in known]
    if unknown:
        print(f"matrix: no combination {', '.join(unknown)} (known: {', '.join(known)})")
        return 2
    results = [(known[name], run(known[name], pytest_args)) for name in names]
    for combination, code in results:
        said = {0: "passed", 5: "not run"}.get(code, f"failed (exit {code})")
        print(f"matrix: {combination}: {said}")
    missing_ok = not os.environ.get("CI")
    failed = [code for _, code in results if code and not (code == 5 and missing_ok)]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
