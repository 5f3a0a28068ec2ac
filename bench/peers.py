"""``inv bench peers``: the fleet's work, two remote ``true`` a host, on 32 and 128
hosts at 50 ms, with ``fabmux -P``, stock ``fab``, parallel-ssh, pyinfra and Ansible,
cold and warm, beside OpenSSH's own floor.

The hosts are :class:`~bench.fleetbase.Fleet`'s. The peers live in a virtualenv of
their own (:mod:`bench.peerenv`). Every row runs in a process of its own, its
parallelism set to the number of hosts; each is tried
:data:`~bench.fleetbase.TRIES` times and the best is kept. Masters and
ControlPersist sockets are stopped, and orphans reaped, between rows.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from functools import partial
from pathlib import Path

from .common import (
    byte_compile_package,
    console_script,
    no_agent,
    reap_orphans,
    reaping,
    scratch,
    stop_masters,
    unwinding_on_signals,
)
from .fleetbase import ADDRESS, GIVE_UP, RTT_MS, SERVERS, TRIES, Fleet, Row, Size, timing
from .peerenv import Peers, ensure_peers
from .peerfiles import (
    ANSIBLE_PLAYBOOK,
    PYINFRA_DEPLOY,
    Targets,
    ansible_config,
    ansible_inventory,
    pssh_spec,
    pyinfra_inventory,
)
from .report import commit, machine, software

__all__ = ["RESULTS", "SIZES", "run_peers"]

RESULTS = Path(__file__).with_name("results-peers.md")
#: Hosts of each run.
SIZES = (32, 128)
#: parallel-ssh's row: run by the peers' Python.
PSSH = Path(__file__).with_name("peer_pssh.py")

#: The table's rows, top to bottom: key, label, and the peer it needs.
TOOLS: tuple[tuple[str, str, str | None], ...] = (
    ("floor", "N plain `ssh HOST true` at once: the login floor", None),
    ("list", "`fabmux --list`: Python's start", None),
    (
        "alone",
        "OpenSSH alone: a master a host (`ssh -fNM`), then the two commands over it",
        None,
    ),
    ("stock", "stock `fab`, a `Connection` a thread (paramiko)", None),
    ("fabmux", "`fabmux -P -H <N hosts> fleet`", None),
    ("pssh", "parallel-ssh: `ParallelSSHClient`, two `run_command('true')`", "parallel-ssh"),
    ("pyinfra", "pyinfra: a deploy of two `server.shell('true')`, `--parallel N`", "pyinfra"),
    ("ansible", "Ansible: `ansible-playbook -f N`, two `command: true` tasks", "ansible-core"),
)
#: Tools whose connections outlive a run, so that a second run finds them up.
WARM = ("fabmux", "ansible")
#: What a warm cell says for a tool that keeps no connection between runs.
NO_WARM = "as cold: no connection outlives a run"


def run_peers(sizes: Sequence[int] = SIZES, tries: int = TRIES) -> str:
    """Measure every size, ``tries`` times a row; the Markdown report. A run of
    :data:`SIZES` and :data:`~bench.fleetbase.TRIES` also puts it at the top of
    :data:`RESULTS`."""
    if tries < 1 or not sizes or min(sizes) < 1:
        raise ValueError(f"sizes and tries must be 1 or more: {list(sizes)}, {tries}")
    byte_compile_package()
    commit()  # the commit measured is the one at the start
    peers = ensure_peers()
    load = [os.getloadavg()[0]]
    measured: list[Size] = []
    with ExitStack() as outer:
        outer.enter_context(reaping())
        outer.enter_context(unwinding_on_signals())
        outer.enter_context(no_agent())
        for count in sizes:
            with ExitStack() as stack:
                measured.append(_size(stack, peers, count, tries))
            reap_orphans()
            # What is measured so far, should a later size not finish.
            print(_report(measured, peers, load * 2, tries), file=sys.stderr, flush=True)
    load.append(os.getloadavg()[0])
    text = _report(measured, peers, load, tries)
    if tuple(sizes) == SIZES and tries == TRIES:
        # On top of the earlier runs, which stay below for comparison.
        earlier = RESULTS.read_text() if RESULTS.exists() else ""
        RESULTS.write_text(text + ("\n" + earlier if earlier else ""))
    return text


def _rows(count: int) -> dict[str, Row]:
    rows = {}
    for key, label, _ in TOOLS:
        logins = 0 if key == "list" else count
        rows[key] = Row(label, expected=logins)
        if key in WARM:
            rows[f"{key}-warm"] = Row(label, expected=0)
    return rows


def _size(stack: ExitStack, peers: Peers, count: int, tries: int) -> Size:
    print(f"bench peers: {count} hosts", file=sys.stderr, flush=True)
    fleet = Fleet(stack, None, count)
    size = Size(count, _rows(count))
    rows = size.rows
    for key, _, peer in TOOLS:
        if peer in peers.missing:
            for name in (key, f"{key}-warm"):
                if name in rows:
                    rows[name].failure = "missing (see the notes)"
            size.notes.append(f"{peer} is not installed: {peers.missing[peer]}")
    files = _write_files(fleet)
    cfg, hosts, n = str(fleet.ssh_config), ",".join(fleet.hosts), str(count)
    fab, fabmux = console_script("fab"), console_script("fabmux")

    def attempt(key: str, action: Callable[[], float]) -> None:
        row = rows[key]
        if row.failure or (row.best is not None and math.isinf(row.best)):
            return  # no more tries of a row that failed or gave up
        try:
            fleet.sample(row, action)
        except RuntimeError as error:
            row.failure = "failed (see the notes)"
            size.notes.append(f"{key} failed: {_shortened(str(error))}")

    def alone() -> float:
        with ExitStack() as local:
            folder = scratch(local, "fmb-pa-")
            local.callback(stop_masters, folder)
            return fleet.alone(folder)

    def fabmux_run(folder: Path) -> float:
        argv = [fabmux, "-S", cfg, "-H", hosts, "-P", "fleet"]
        return fleet.run(argv, {"FABRIC_MUX_CONTROL_DIR": str(folder)})

    activated = peers.activated(fleet.env)

    def peer_run(argv: list[str], extra_env: dict[str, str] | None = None) -> float:
        return fleet.run(argv, {**activated, **(extra_env or {})})

    def ansible_run(folder: Path) -> float:
        config = folder / "ansible.cfg"
        config.write_text(ansible_config(files / "ansible-home", folder))
        argv = [peers.command("ansible-playbook"), "-i", "inventory.yml", "-f", n, "play.yml"]
        return peer_run(argv, {"ANSIBLE_CONFIG": str(config), "LC_ALL": "C.UTF-8"})

    pssh = [peers.command("python"), str(PSSH), "pssh.json"]
    pyinfra = [peers.command("pyinfra"), "-y", "--parallel", n, "inventory.py", "deploy.py"]
    for attempt_number in range(tries):
        attempt("floor", fleet.floor)
        attempt("list", partial(fleet.run, [fabmux, "--list"]))
        attempt("alone", alone)
        attempt("stock", partial(fleet.run, [fab, "-S", cfg, "stock", "--names", hosts]))
        attempt("pssh", partial(peer_run, pssh))
        attempt("pyinfra", partial(peer_run, pyinfra))
        for key, run in (("ansible", ansible_run), ("fabmux", fabmux_run)):
            with ExitStack() as local:
                # Its masters (Ansible's ControlPersist ones too) end with the block.
                folder = scratch(local, "fmb-pc-")
                local.callback(stop_masters, folder)
                attempt(key, partial(run, folder))
                if attempt_number < tries - 1:
                    continue
                cold = rows[key]
                if cold.failure or not cold.samples or math.isinf(cold.samples[-1]):
                    rows[f"{key}-warm"].failure = rows[f"{key}-warm"].failure or "no cold run"
                    continue
                # The last cold run left every master up: warm runs follow it.
                for _ in range(tries):
                    attempt(f"{key}-warm", partial(run, folder))
    return size


def _write_files(fleet: Fleet) -> Path:
    """Each peer's inventory and work in the project folder (the runs' working folder)."""
    targets = Targets(
        ports=fleet.ports,
        address=ADDRESS,
        user=fleet.user,
        key=fleet.key,
        ssh_config=fleet.ssh_config,
        known_by_address=fleet.known_by_address,
    )
    project = fleet.project
    (project / "pssh.json").write_text(pssh_spec(targets))
    (project / "inventory.py").write_text(pyinfra_inventory(targets))
    (project / "deploy.py").write_text(PYINFRA_DEPLOY)
    (project / "inventory.yml").write_text(ansible_inventory(targets))
    (project / "play.yml").write_text(ANSIBLE_PLAYBOOK)
    return project


def _shortened(text: str, limit: int = 400) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else f"{text[: limit // 2]} ... {text[-limit // 2 :]}"


def _cell(size: Size, key: str) -> str:
    row = size.rows.get(key)
    if row is None:
        return NO_WARM
    text = timing(row)
    best, floor = row.best, size.rows["floor"].best
    if best is None or math.isinf(best) or key in ("floor", "list"):
        return text
    if floor:
        text += f", {best / floor:.2f}x floor"
    stock = size.rows["stock"].best
    if key.endswith("-warm") and stock and not math.isinf(stock):
        text += f", {best / stock:.2f}x stock"
    return text


def _report(measured: Sequence[Size], peers: Peers, load: list[float], tries: int) -> str:
    sizes = [size.hosts for size in measured]
    lines = [
        f"## fabric-mux and its peers at {commit()}: two remote `true` a host on"
        f" {', '.join(map(str, sizes))} hosts at {RTT_MS} ms",
        "",
        f"- Link: each sshd behind a `LatencyRelay` adding {RTT_MS // 2} ms each way;"
        f" at most {SERVERS} sshd servers, more hosts spread over them, a route each"
        " (its own HostKeyAlias, master and login)",
        "- Work: `true`, then `true` again, on every host. `fabmux -P` and stock `fab` run"
        " `inv bench fleet`'s fabfile (two `c.run('true', hide=True)`); parallel-ssh, one"
        " client and two `run_command('true')`; pyinfra, one deploy of two `server.shell`"
        " operations; Ansible, one playbook of two `command` tasks (facts not gathered)",
        f"- Machine: {machine()}",
        f"- Software: {software()}; the peers, in a virtualenv of their own:"
        f" {peers.software() or 'none installed'}",
        f"- Method: `inv bench peers`, {time.strftime('%Y-%m-%d %H:%M %Z')}; each row a"
        " process of its own, working on every host at once (its parallelism the number"
        f" of hosts); the best of {tries} tries a row,"
        " logins counted on the servers' logs at each try; masters and ControlPersist"
        f" sockets stopped between rows; load average {load[0]:.2f} at the start,"
        f" {load[1]:.2f} at the end",
        "",
    ]
    header = "".join(f" {n} hosts, cold | {n} hosts, warm |" for n in sizes)
    lines += [f"| |{header}", "| --- |" + " ---: | ---: |" * len(sizes)]
    for key, label, _ in TOOLS:
        cells = []
        for size in measured:
            cells.append(_cell(size, key))
            if key in ("floor", "list", "alone"):
                cells.append("")
            else:
                cells.append(_cell(size, f"{key}-warm"))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", *(f"- {note}" for note in _NOTES)]
    for size in measured:
        lines += [f"- {size.hosts} hosts: {note}" for note in size.notes]
    return "\n".join(lines) + "\n"


_NOTES = (
    "Cold: no master and no ControlPersist socket at the start (a new control folder"
    " for `fabmux` and for Ansible's `control_path_dir`). Warm: every master left up"
    " by the run before, in the same folder: `fabmux`'s, and Ansible's ControlPersist"
    " masters (its default `-o ControlMaster=auto -o ControlPersist=60s`). Stock `fab`,"
    " parallel-ssh and pyinfra keep no connection between runs: their warm run is a cold"
    " one.",
    "Ratios: against the floor; warm rows against stock `fab` too. Expected logins: one a"
    " host a run, none warm; a try that made another number is shown in bold.",
    "Host keys: `fabmux`, OpenSSH and Ansible (OpenSSH with `-F` the fleet's ssh_config,"
    " `StrictHostKeyChecking yes`) check them against the fleet's known_hosts; pyinfra"
    " (paramiko) strictly (`ssh_strict_host_key_checking: yes`) against the same keys by"
    " address; parallel-ssh checks no host key: it has no setting for it; stock `fab`"
    " accepts any (Fabric sets paramiko's `AutoAddPolicy`).",
    "Ansible at its defaults otherwise: pipelining off and the remote Python discovered,"
    " so that each `command` task is six ssh or sftp runs a host over its master (home"
    " asked, a temporary folder made, the module sent by sftp, made executable, run by"
    " the remote Python, the folder removed), 13 a host for the play with the discovery;"
    " tasks one after the other over all hosts (the linear strategy), as pyinfra runs"
    " its operations. parallel-ssh: libssh2 (`pssh.clients.ParallelSSHClient`),"
    " `pool_size` N; pyinfra: paramiko, `--parallel N`, `sh -c true` twice a host;"
    " Ansible: `-f N` forks.",
    "Key exchange: the system's OpenSSH (the floor, OpenSSH alone, `fabmux`, Ansible)"
    " negotiates sntrup761x25519 with these servers, about 130 ms of client CPU a login"
    " here; paramiko (stock `fab`, pyinfra) and libssh2 (parallel-ssh) have no"
    " post-quantum exchange and settle on curve25519, about 16 ms.",
    f"A try that takes {GIVE_UP:.0f} s is ended (its whole process group) and shown as not"
    " finished; a row that fails or gives up is not tried again.",
)
