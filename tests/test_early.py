"""``ssh -G`` guessed from fabmux's command line and asked while Fabric loads: used
only when the run asks exactly that, and nothing it read changed since."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fabric_mux import early, resolve
from fabric_mux.argv import SshTarget
from fabric_mux.places import KEPT

SSH = shutil.which("ssh") or "ssh"


@pytest.fixture(autouse=True)
def fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # A control folder of the test's own, with no answers kept by an earlier run.
    monkeypatch.setenv("FABRIC_MUX_CONTROL_DIR", str(tmp_path / "control"))
    resolve.forget()
    yield
    early.stop()
    resolve.forget()


@pytest.fixture
def config(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> Path:
    caplog.set_level(logging.DEBUG, logger="fabric_mux")
    path = tmp_path / "ssh_config"
    path.write_text("Host web\n    HostName 10.0.0.5\nHost db\n    HostName 10.0.0.6\n")
    settled(path)
    return path


def settled(*paths: Path) -> None:
    """Date ``paths`` (and their folders) a minute back: written well before the run."""
    past = time.time() - 60
    for path in {*paths, *(path.parent for path in paths)}:
        os.utime(path, (past, past))


def asked(caplog: pytest.LogCaptureFixture) -> tuple[int, int]:
    """``ssh -G`` answers taken so far: (asked early, asked by the run)."""
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("resolving route")]
    ahead = sum(1 for line in lines if line.endswith("(asked early)"))
    return ahead, len(lines) - ahead


def all_asked() -> None:
    guesses = early._Held.guesses
    assert guesses is not None
    guesses._thread.join(30)


def view(config: Path, alias: str, **target: object) -> str:
    return resolve.resolve_config(SSH, SshTarget(alias, config_file=str(config), **target))  # type: ignore[arg-type]


def test_what_is_guessed_from_the_command_line() -> None:
    assert early.questions(["-S", "cfg", "-H", "web,db", "-P", "deploy"]) == [
        (SSH, "-v", "-G", "-F", "cfg", "--", "web"),
        (SSH, "-v", "-G", "-F", "cfg", "--", "db"),
    ]
    assert early.questions(["--hosts=web,web,root@db,db:2222,[::1]", "deploy"]) == [
        (SSH, "-v", "-G", "--", "web")
    ]
    for changes_the_questions in ("-i", "--list", "--no-mux", "-t", "--mux-control-path=x"):
        assert early.questions(["-H", "web", changes_the_questions, "k", "deploy"]) == []
    # As the run names them: blanks around and between names dropped.
    assert early.questions(["-H", " web, ,db ,", "deploy"]) == [
        (SSH, "-v", "-G", "--", "web"),
        (SSH, "-v", "-G", "--", "db"),
    ]
    assert early.questions(["-H", " , ", "deploy"]) == []
    assert early.questions(["deploy"]) == []
    assert early.questions(["-H"]) == []
    assert early.questions(["deploy", "--", "-H", "web"]) == []


def test_a_guessed_answer_is_the_runs_and_not_asked_again(
    config: Path, caplog: pytest.LogCaptureFixture
) -> None:
    early.guess(["-S", str(config), "-H", "web,db", "deploy"])
    all_asked()  # a guess not yet asked is the run's to ask
    assert "hostname 10.0.0.5" in view(config, "web")
    assert "hostname 10.0.0.6" in view(config, "db")
    assert asked(caplog) == (2, 0)
    guessed = view(config, "db")
    resolve.forget()
    early.stop()
    assert view(config, "db") == guessed
    assert asked(caplog) == (2, 1)


def test_a_file_changed_after_the_guess_is_read_again(
    config: Path, caplog: pytest.LogCaptureFixture
) -> None:
    early.guess(["-S", str(config), "-H", "web", "deploy"])
    all_asked()
    config.write_text("Host web\n    HostName 10.0.0.7\n")
    assert "hostname 10.0.0.7" in view(config, "web")
    assert asked(caplog) == (0, 1)


def test_a_file_changed_just_before_the_guess_is_read_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # File times lag the clock: ssh may have read the version before this one.
    caplog.set_level(logging.DEBUG, logger="fabric_mux")
    config = tmp_path / "ssh_config"
    config.write_text("Host web\n    HostName 10.0.0.5\n")
    early.guess(["-S", str(config), "-H", "web", "deploy"])
    assert "hostname 10.0.0.5" in view(config, "web")
    assert asked(caplog) == (0, 1)


def test_a_changed_environment_asks_again(
    config: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    early.guess(["-S", str(config), "-H", "web", "deploy"])
    all_asked()
    monkeypatch.setenv("FMUX_SOMETHING_NEW", "1")
    view(config, "web")
    assert asked(caplog) == (0, 1)


def test_a_question_not_guessed_ends_the_guessing(
    config: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The project's config chose another user: every guess is of the wrong question.
    early.guess(["-S", str(config), "-H", "web,db", "deploy"])
    assert "user deploy" in view(config, "web", user="deploy")
    view(config, "db")
    assert asked(caplog) == (0, 2)
    assert early.take([SSH, "-v", "-G", "-F", str(config), "--", "db"]) is None


def test_a_config_that_runs_a_command_is_asked_again_and_guessed_no_more(
    config: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ran = tmp_path / "ran"
    config.write_text(f'Match exec "echo x >> {ran}"\n    User deploy\n')
    settled(config)
    early.guess(["-S", str(config), "-H", "web,db,app", "deploy"])
    all_asked()
    assert ran.read_text() == "x\n"  # the first guess only
    view(config, "web")
    assert asked(caplog) == (0, 1)


def test_stopping_leaves_nothing_running(config: Path) -> None:
    early.guess(["-S", str(config), "-H", ",".join(f"h{n}" for n in range(40)), "deploy"])
    guesses = early._Held.guesses
    assert guesses is not None
    early.stop()
    assert not guesses._thread.is_alive()
    assert early.take([SSH, "-v", "-G", "-F", str(config), "--", "h39"]) is None


# The very case: a fork while the guessing thread runs (Python 3.12 warns of it).
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_asks_for_itself(config: Path) -> None:
    # The child has no thread asking: it must not wait on a guess being asked.
    early.guess(["-S", str(config), "-H", ",".join(f"h{n}" for n in range(40)), "deploy"])
    pid = os.fork()
    if pid == 0:  # the child: a guess it waited on would hang it, so the alarm ends it
        signal.alarm(20)
        taken = [early.take([SSH, "-v", "-G", "-F", str(config), "--", f"h{n}"]) for n in range(40)]
        os._exit(0 if taken == [None] * 40 else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_an_answer_kept_from_an_earlier_run_ends_the_guessing(
    config: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A control folder that only the project's config names: not looked at before.
    folder = tmp_path / "elsewhere"
    folder.mkdir(mode=0o700)
    web = SshTarget("web", config_file=str(config))
    resolve.resolve_config(SSH, web, keep_in=folder)  # an earlier run keeps its answer
    resolve.forget()
    hosts = ",".join(["web", *(f"h{n}" for n in range(40))])
    early.guess(["-S", str(config), "-H", hosts, "deploy"])
    resolve.resolve_config(SSH, web, keep_in=folder)
    all_asked()
    left = sum(
        early.take([SSH, "-v", "-G", "-F", str(config), "--", f"h{n}"]) is not None
        for n in range(40)
    )
    assert left < 20  # the guessing stopped there
    assert asked(caplog) == (0, 1)  # the earlier run's ask; the kept answer since


def test_nothing_is_guessed_when_an_earlier_run_kept_its_answers(
    config: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "control"
    folder.mkdir(mode=0o700)
    early.guess(["-S", str(config), "-H", "web", "deploy"])
    all_asked()
    assert early.take([SSH, "-v", "-G", "-F", str(config), "--", "web"]) is not None
    early.stop()
    resolve.resolve_config(SSH, SshTarget("db", config_file=str(config)), keep_in=folder)
    assert list((folder / KEPT).iterdir())
    early.guess(["-S", str(config), "-H", "web", "deploy"])
    all_asked()
    assert early.take([SSH, "-v", "-G", "-F", str(config), "--", "web"]) is None
