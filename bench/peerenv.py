"""The peers ``inv bench peers`` measures, in a virtualenv of their own so that they
never enter fabric-mux's dependencies: made on the first run, reused after."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .common import clean_env

__all__ = ["PEERS", "VENV", "Peers", "ensure_peers"]

#: The peers, pinned to the versions measured.
PEERS = {"parallel-ssh": "2.16.0.post1", "pyinfra": "3.10.0", "ansible-core": "2.19.14"}
#: What they stand on, named in the report beside them.
BENEATH = ("ssh2-python", "paramiko", "gevent")
#: Where the virtualenv lives (git ignores it).
VENV = Path(__file__).with_name(".peers-venv")

_VERSIONS = (
    "import json, importlib.metadata as m;"
    "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"
)


@dataclass
class Peers:
    venv: Path
    #: Every distribution installed in the virtualenv, by normalized name.
    versions: dict[str, str] = field(default_factory=dict)
    #: The peers that are not there at their pinned version, and why.
    missing: dict[str, str] = field(default_factory=dict)

    def command(self, name: str) -> str:
        """A console script (or ``python``) of the virtualenv."""
        return str(self.venv / "bin" / name)

    def activated(self, env: dict[str, str]) -> dict[str, str]:
        """``env`` as the virtualenv's ``activate`` leaves it. pyinfra puts the
        site-packages of ``$VIRTUAL_ENV`` first on its path: it must be this one,
        not fabric-mux's."""
        path = f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', os.defpath)}"
        return {**env, "VIRTUAL_ENV": str(self.venv), "PATH": path}

    def software(self) -> str:
        """The peers' versions and those of what they stand on, for the report."""
        names = [*PEERS, *BENEATH]
        return ", ".join(f"{name} {self.versions[name]}" for name in names if name in self.versions)


def ensure_peers(venv: Path = VENV) -> Peers:
    """The virtualenv with every peer at its pinned version: made or completed
    with pip where needed (a peer pip cannot install is listed as missing)."""
    peers = Peers(venv)
    log = venv.with_name(venv.name + ".log")
    if not (venv / "bin" / "python").exists():
        made = _quiet([sys.executable, "-m", "venv", str(venv)], log)
        if made:
            peers.missing = dict.fromkeys(PEERS, f"no virtualenv: {made}")
            return peers
    peers.versions = _installed(venv)
    wanted = [f"{name}=={pinned}" for name, pinned in PEERS.items() if not _has(peers, name)]
    if wanted:
        print(f"bench peers: installing {' '.join(wanted)} in {venv}", file=sys.stderr, flush=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        # All at once; one by one if that fails, so that one broken peer leaves the others.
        if _quiet([*pip, *wanted], log) and len(wanted) > 1:
            for spec in wanted:
                _quiet([*pip, spec], log)
        peers.versions = _installed(venv)
    for name, pinned in PEERS.items():
        if not _has(peers, name):
            found = peers.versions.get(name)
            why = f"{found} found, {pinned} wanted" if found else f"pip could not install {pinned}"
            peers.missing[name] = f"{why} (see {log})"
    return peers


def _has(peers: Peers, name: str) -> bool:
    return peers.versions.get(name) == PEERS[name]


def _installed(venv: Path) -> dict[str, str]:
    proc = subprocess.run(
        [str(venv / "bin" / "python"), "-c", _VERSIONS],
        capture_output=True,
        text=True,
        check=False,
        env=clean_env(),
    )
    if proc.returncode != 0:
        return {}
    found: dict[str, str] = json.loads(proc.stdout)
    return {_normalized(name): version for name, version in found.items()}


def _normalized(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _quiet(argv: list[str], log: Path) -> str:
    """Run ``argv``, its output appended to ``log``; "" on success, else its last line."""
    with log.open("a") as out:
        out.write(f"$ {' '.join(argv)}\n")
        out.flush()
        proc = subprocess.run(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, check=False, env=clean_env()
        )
    if proc.returncode == 0:
        return ""
    lines = log.read_text(errors="replace").strip().splitlines()
    return lines[-1] if lines else f"exit {proc.returncode}"
