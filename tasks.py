"""Developer tasks: ``inv test``, ``inv lint``, ``inv matrix``, ``inv dist``, ``inv demo``,
``inv bench``, ``inv docs``.

Commands run from argv lists, never through a shell.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task

from bench.demo import run_demo
from bench.fleet import OPENSSH, SIZES, run_fleet
from bench.fleetbase import TRIES
from bench.peers import SIZES as PEER_SIZES
from bench.peers import run_peers
from bench.run import DEFAULT_REPEAT, SECTIONS, run_bench
from devtools.matrix import COMBINATIONS
from devtools.matrix import run as run_combination


def _run(argv: list[str]) -> int:
    print(f"$ {shlex.join(argv)}", flush=True)
    return subprocess.run(argv, check=False).returncode


@task(help={"args": "Extra pytest arguments, e.g. --args='-k fab -x'."})
def test(c: Context, args: str = "") -> None:
    """Run the test suite: python3 -m pytest."""
    code = _run([sys.executable, "-m", "pytest", *shlex.split(args)])
    if code:
        raise Exit(code=code)


#: Where ``../shared/openssh/install`` puts the OpenSSH builds of the version matrix.
OPENSSH_BUILDS = Path("/opt")


def openssh_prefixes(versions: str = "") -> list[Path]:
    """The installed OpenSSH builds (``/opt/openssh-VERSION``), oldest first;
    ``versions``: only those whose name holds one of these comma-separated words."""
    wanted = [word for word in versions.split(",") if word]
    found = [
        prefix
        for prefix in OPENSSH_BUILDS.glob("openssh-*")
        if (prefix / "bin" / "ssh").exists() and (prefix / "sbin" / "sshd").exists()
    ]
    if wanted:
        found = [p for p in found if any(p.name.split("-")[1] == w for w in wanted)]

    def number(prefix: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in prefix.name.split("-")[1].split("."))

    return sorted(found, key=number)


@task(
    help={
        "versions": "Comma-separated OpenSSH versions (default: every build in /opt), e.g. "
        "8.0,10.5.",
        "deps": "Comma-separated dependency combinations (default: all of them: "
        + ", ".join(c.name for c in COMBINATIONS)
        + "); 'none' for none.",
        "args": "Extra pytest arguments, e.g. --args='-x tests/test_askpass.py'.",
    }
)
def matrix(c: Context, versions: str = "", deps: str = "", args: str = "") -> None:
    """The suite once with the system's OpenSSH, then once with each build in /opt
    (FMUX_OPENSSH=PREFIX); then the tests where versions differ with each
    combination of Python, fabric, invoke and paramiko at the edges of the
    package's ranges (devtools.matrix); a line a run at the end. Install the
    OpenSSH builds first: ``../shared/openssh/install``."""
    prefixes = openssh_prefixes(versions)
    if not prefixes:
        raise Exit(f"no OpenSSH build under {OPENSSH_BUILDS}: run ../shared/openssh/install")
    runs: list[tuple[str, int]] = []
    for prefix in [None, *prefixes]:
        env = {**os.environ, "FMUX_OPENSSH": str(prefix) if prefix else ""}
        argv = [sys.executable, "-m", "pytest", *shlex.split(args)]
        label = prefix.name if prefix else "the system's OpenSSH"
        print(f"$ FMUX_OPENSSH={prefix or ''} {shlex.join(argv)}", flush=True)
        runs.append((label, subprocess.run(argv, env=env, check=False).returncode))
    known = {combination.name: combination for combination in COMBINATIONS}
    names = list(known) if not deps else [] if deps == "none" else deps.split(",")
    for name in names:
        if name not in known:
            raise Exit(f"no dependency combination {name!r} (known: {', '.join(known)})")
        runs.append((str(known[name]), run_combination(known[name], shlex.split(args))))
    for label, code in runs:
        print(f"{label}: {'passed' if code == 0 else f'failed (exit {code})'}")
    if any(code for _, code in runs):
        raise Exit(code=1)


@task
def dist(c: Context) -> None:
    """Build the sdist and the wheel, check them (twine --strict), and collect the
    whole suite from the unpacked sdist, then run its quick tests there: what a
    packager does with it."""
    shutil.rmtree("dist", ignore_errors=True)
    if _run([sys.executable, "-m", "build", "--outdir", "dist", "."]):
        raise Exit(code=1)
    built = sorted(map(str, Path("dist").iterdir()))
    if _run([sys.executable, "-m", "twine", "check", "--strict", *built]):
        raise Exit(code=1)
    (sdist,) = Path("dist").glob("*.tar.gz")
    with tempfile.TemporaryDirectory(prefix="fabric-mux-sdist-") as scratch:
        with tarfile.open(sdist) as archive:
            archive.extractall(scratch, filter="data")
        (tree,) = Path(scratch).iterdir()
        quick = ["tests/test_argv.py", "tests/test_hostlist.py", "tests/test_rollout.py"]
        for argv in (
            [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *quick],
        ):
            print(f"$ (in the sdist) {shlex.join(argv)}", flush=True)
            if subprocess.run(argv, cwd=tree, check=False).returncode:
                raise Exit(f"the suite does not run from the sdist {sdist}", code=1)


@task
def lint(c: Context) -> None:
    """ruff check, ruff format --check, mypy: all of them, failing if any fails."""
    # By this Python's own modules: `.venv/bin/inv` runs with the venv's bin off PATH.
    ruff = [sys.executable, "-m", "ruff"]
    commands = (
        [*ruff, "check", "."],
        [*ruff, "format", "--check", "."],
        [sys.executable, "-m", "mypy"],
    )
    failed = [shlex.join(argv) for argv in commands if _run(argv) != 0]
    if failed:
        raise Exit(f"lint failed: {', '.join(failed)}", code=1)


#: Where ``inv docs`` builds the site.
DOCS_HTML = Path("docs/_build/html")
#: A fresh build (-E), warnings as errors (-W, all of them: --keep-going), every
#: reference checked (-n).
SPHINX_FLAGS = ["-b", "html", "-E", "-W", "--keep-going", "-n", "-q"]


def docs_commands(python: str = sys.executable) -> list[list[str]]:
    """The site's build, then the check of every link inside it."""
    return [
        [python, "-m", "sphinx", *SPHINX_FLAGS, "docs", str(DOCS_HTML)],
        [python, "docs/check_links.py", str(DOCS_HTML)],
    ]


@task
def docs(c: Context) -> None:
    """Build the site (docs/_build/html), warnings as errors; check its links.

    Needs the docs extra (pip install -e '.[docs]'). Links to other sites are not
    fetched: ``python3 docs/check_links.py -v`` lists them. CI runs the same.
    """
    # From nothing: viewcode keeps a source page that is newer than its module, even
    # where the page's anchors no longer match what the reference links to.
    shutil.rmtree(DOCS_HTML.parent, ignore_errors=True)
    for argv in docs_commands():
        code = _run(argv)
        if code:
            raise Exit(code=code)
    print(f"the site: {(DOCS_HTML / 'index.html').absolute()}")


@task
def demo(c: Context) -> None:
    """A 3-task deploy with stock fab, twice without mux and twice with it."""
    run_demo()


@task(
    help={
        "repeat": f"Repetitions per measurement (default {DEFAULT_REPEAT}); medians are shown.",
        "only": f"Run only these sections, e.g. 'bc' (default: {SECTIONS}).",
        "rtt": "Reach the server through a relay adding this round trip, in ms (0: loopback).",
    },
)
def bench(c: Context, repeat: int = DEFAULT_REPEAT, only: str = SECTIONS, rtt: float = 0) -> None:
    """Stock Fabric vs fabric-mux vs raw OpenSSH; a full run writes bench/results*.md.

    ``inv bench fleet`` and ``inv bench peers`` run those scenarios instead (the tasks below).
    """
    if _next_task("bench") in ("fleet", "peers"):
        return
    sys.stdout.write(run_bench(repeat=repeat, only=only, rtt_ms=rtt))


@task(
    help={
        "sizes": f"Hosts of each run (default {','.join(map(str, SIZES))}).",
        "openssh": f"OpenSSH builds to compare (default {','.join(OPENSSH)}).",
    },
)
def fleet(
    c: Context, sizes: str = ",".join(map(str, SIZES)), openssh: str = ",".join(OPENSSH)
) -> None:
    """`inv bench fleet`: fabmux -P over 32-500 hosts at 50 ms, cold and warm, against
    OpenSSH's floor and stock threads; a full run writes bench/results-fleet.md."""
    counts = [int(size) for size in sizes.split(",")]
    sys.stdout.write(run_fleet(counts, openssh.split(",")))


@task(
    help={
        "sizes": f"Hosts of each run (default {','.join(map(str, PEER_SIZES))}).",
        "tries": f"Tries a row, the best shown (default {TRIES}).",
    },
)
def peers(c: Context, sizes: str = ",".join(map(str, PEER_SIZES)), tries: int = TRIES) -> None:
    """`inv bench peers`: the fleet's work at 50 ms with fabmux -P, stock fab, parallel-ssh,
    pyinfra and Ansible, cold and warm; a full run writes bench/results-peers.md."""
    counts = [int(size) for size in sizes.split(",")]
    sys.stdout.write(run_peers(counts, tries))


def _next_task(name: str) -> str | None:
    """The word after task ``name`` on the command line (``inv bench fleet``: fleet)."""
    words = sys.argv[1:]
    if name not in words:
        return None
    after = words[words.index(name) + 1 :]
    return after[0] if after else None
