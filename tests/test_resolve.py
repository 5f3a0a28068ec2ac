"""OpenSSH's view of a connection is asked again whenever it may have changed."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from fabric_mux import resolve
from fabric_mux.argv import SshTarget


@pytest.fixture(autouse=True)
def empty_cache() -> None:
    resolve.forget()


def asked(caplog: pytest.LogCaptureFixture) -> int:
    return sum(1 for r in caplog.records if r.getMessage().startswith("resolving route"))


def view(config: Path, alias: str = "web") -> str:
    return resolve.resolve_config("ssh", SshTarget(alias, config_file=str(config)))


@pytest.fixture
def config(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> Path:
    caplog.set_level(logging.DEBUG, logger="fabric_mux")
    path = tmp_path / "ssh_config"
    path.write_text("Host web\n    HostName 10.0.0.5\n")
    return path


def test_an_unchanged_config_is_asked_once(config: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert "hostname 10.0.0.5" in view(config)
    assert "hostname 10.0.0.5" in view(config)
    assert asked(caplog) == 1


def test_a_changed_file_is_read_again(config: Path, caplog: pytest.LogCaptureFixture) -> None:
    view(config)
    config.write_text("Host web\n    HostName 10.0.0.6\n")
    assert "hostname 10.0.0.6" in view(config)
    assert asked(caplog) == 2


def test_a_new_file_matching_an_include_is_read(
    config: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    parts = tmp_path / "conf.d"
    parts.mkdir()
    config.write_text(f"Include {parts}/*.conf\nHost web\n    HostName 10.0.0.5\n")
    assert "user deploy" not in view(config)
    (parts / "user.conf").write_text("Host web\n    User deploy\n")
    assert "user deploy" in view(config)
    assert asked(caplog) == 2


def test_a_match_exec_is_run_every_time(config: Path, caplog: pytest.LogCaptureFixture) -> None:
    config.write_text('Match exec "true"\n    User deploy\n')
    view(config)
    view(config)
    assert asked(caplog) == 2


def test_the_environment_counts(
    config: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    view(config)
    monkeypatch.setenv("FMUX_SOMETHING_NEW", "1")
    view(config)
    assert asked(caplog) == 2
    assert os.environ["FMUX_SOMETHING_NEW"] == "1"
