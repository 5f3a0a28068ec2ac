"""Stock ``fab`` and ``fabmux`` against a real sshd: one login per host across runs."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from pathlib import Path

import fabrun
import pytest
from fabrun import run_fab
from waiting import wait_until

from fabric_mux import command, early, main
from fabric_mux.resolve import KEPT
from fabric_mux.testing import SshServer

FABFILE = """
from fabric import task

for n in range(1, 6):
    def body(c, n=n):
        for i in range(3):
            c.run(f"echo task{n}-{i}")
    globals()[f"t{n}"] = task(name=f"t{n}")(body)

@task
def kind(c):
    print(type(c).__name__)
"""


@pytest.fixture
def project(tmp_path: Path, control_dir: Path) -> Path:
    (tmp_path / "fabfile.py").write_text(FABFILE)
    return tmp_path


def write_yaml(project: Path, control_dir: Path, enabled: bool = True) -> None:
    (project / "fabric.yaml").write_text(
        "tasks:\n"
        "  executor_class: fabric_mux.MuxExecutor\n"
        "mux:\n"
        f"  control_dir: {control_dir}\n"
        f"  enabled: {'true' if enabled else 'false'}\n"
    )


def fab(project: Path, sshd: SshServer, *args: str, name: str = "fab") -> str:
    return run_fab(project, sshd.ssh_config, sshd.alias, *args, name=name)


TASKS = ("t1", "t2", "t3", "t4", "t5")
EXPECTED = "".join(f"task{n}-{i}\n" for n in range(1, 6) for i in range(3))


def test_stock_fab_with_fabric_yaml_logs_in_once_for_two_runs(
    project: Path, sshd: SshServer, control_dir: Path
) -> None:
    write_yaml(project, control_dir)
    assert fab(project, sshd, *TASKS) == EXPECTED
    assert fab(project, sshd, *TASKS) == EXPECTED
    assert sshd.logins() == 1
    assert fab(project, sshd, "kind") == "MuxConnection\n"


def test_mux_disabled_in_config_gives_plain_fabric(
    project: Path, sshd: SshServer, control_dir: Path
) -> None:
    write_yaml(project, control_dir, enabled=False)
    assert fab(project, sshd, "kind") == "Connection\n"
    assert fab(project, sshd, *TASKS) == EXPECTED
    assert sshd.logins() == 5  # stock Fabric: a login per task
    assert os.listdir(control_dir) == []


def test_fabmux_needs_no_config_file(project: Path, sshd: SshServer, control_dir: Path) -> None:
    env_dir = str(control_dir)
    os.environ["FABRIC_MUX_CONTROL_DIR"] = env_dir
    try:
        assert fab(project, sshd, *TASKS, name="fabmux") == EXPECTED
        assert fab(project, sshd, "kind", name="fabmux") == "MuxConnection\n"
        assert sshd.logins() == 1
        assert fab(project, sshd, "--no-mux", "kind", name="fabmux") == "Connection\n"
        assert fab(project, sshd, "--no-mux", "t1", name="fabmux") == EXPECTED[:24]
        assert sshd.logins() == 2
    finally:
        del os.environ["FABRIC_MUX_CONTROL_DIR"]


def test_fabmux_persist_zero_leaves_no_master(
    project: Path, sshd: SshServer, control_dir: Path
) -> None:
    os.environ["FABRIC_MUX_CONTROL_DIR"] = str(control_dir)
    try:
        output = fab(project, sshd, "--mux-persist", "0", "t1", name="fabmux")
    finally:
        del os.environ["FABRIC_MUX_CONTROL_DIR"]
    assert output == "task1-0\ntask1-1\ntask1-2\n"
    # The master ends a second after the run's hold on it closes; its socket goes with it.
    assert wait_until(lambda: os.listdir(control_dir) in ([], [KEPT]))  # no socket
    assert sshd.logins() == 1


def test_the_fabmux_command_keeps_its_imports_from_the_collector(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What was imported lives as long as the process: the collector is not to walk it
    # on every full collection and once more at exit.
    calls: list[str] = []
    monkeypatch.setattr(early, "guess", lambda argv: calls.append("guess"))
    monkeypatch.setattr(gc, "freeze", lambda: calls.append("freeze"))
    monkeypatch.setattr(main.program, "run", lambda: calls.append("run"))
    command.run()
    assert calls == ["guess", "freeze", "run"]
    pyproject = Path(__file__).parents[1] / "pyproject.toml"
    assert 'fabmux = "fabric_mux.command:run"' in pyproject.read_text().splitlines()


def test_the_fabmux_command_guesses_before_it_loads_fabric() -> None:
    code = (
        "import sys\n"
        "from fabric_mux import early\n"
        "early.guess = lambda argv: print('fabric' in sys.modules, 'invoke' in sys.modules)\n"
        "from fabric_mux.command import run\n"
        "sys.argv = ['fabmux', '--version']\n"
        "run()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "False False"


@pytest.mark.parametrize(
    ("host", "said"),
    [
        ("127.0.0.1:1", "could not connect (ssh exit 255): ssh: connect to host 127.0.0.1 port 1"),
        ("web:99999", "ssh rejected its configuration (ssh exit 255): Bad port '99999'"),
        ("web name", "ssh rejected its configuration (ssh exit 255): hostname contains invalid"),
    ],
)
def test_fabmux_says_a_failure_to_reach_a_host_in_ssh_s_words_without_a_traceback(
    project: Path, sshd: SshServer, host: str, said: str
) -> None:
    done = fabrun.fab(project, sshd.ssh_config, host, "t1", name="fabmux")
    assert done.returncode == 1
    assert done.stderr.startswith("fabric-mux: ") and said in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert sshd.logins() == 0


def test_fabmux_says_an_ssh_config_it_cannot_read_in_one_line(
    project: Path, sshd: SshServer
) -> None:
    broken = project / "ssh_config"
    broken.write_text("Match nonsense\n")
    done = fabrun.fab(project, broken, sshd.alias, "t1", name="fabmux")
    assert done.returncode == 1
    assert done.stderr == (
        "fabric-mux: cannot read the ssh_config: Missing parameter to Match 'nonsense' keyword\n"
    )
