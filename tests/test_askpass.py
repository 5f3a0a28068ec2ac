"""Password logins asked once per master, with the secret kept out of argv and environment."""

from __future__ import annotations

import logging
from pathlib import Path

import fabric
import pytest
from conftest import TEST_PASSWORD

from fabric_mux import MuxConnection
from fabric_mux.exceptions import AuthenticationFailed
from fabric_mux.pytest_plugin import SshdFactory
from fabric_mux.testing import SshServer

PASSWORD_ONLY = ["BatchMode=no", "PubkeyAuthentication=no", "PreferredAuthentications=password"]


@pytest.fixture
def password_server(sshd_factory: SshdFactory) -> SshServer:
    return sshd_factory(sshd_options=["PasswordAuthentication yes"])


def password_config(server: SshServer, control_dir: Path) -> fabric.Config:
    return server.fabric_config(
        {"mux": {"control_dir": str(control_dir), "ssh_options": PASSWORD_ONLY}}
    )


def test_six_commands_two_connections_one_password_login(
    password_server: SshServer, control_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="fabric_mux")
    config = password_config(password_server, control_dir)
    kwargs = {"password": TEST_PASSWORD}
    first = MuxConnection(password_server.alias, config=config, connect_kwargs=kwargs)
    second = MuxConnection(password_server.alias, config=config, connect_kwargs=kwargs)
    outputs = [c.run(f"echo {i}", hide=True).stdout for i in range(3) for c in (first, second)]
    assert outputs == ["0\n", "0\n", "1\n", "1\n", "2\n", "2\n"]
    log = password_server.log.read_text()
    assert log.count("Accepted password for") == 1
    assert password_server.logins() == 1
    # The secret is in no process's argv or environment: not the master's.
    pid = first.master_pid
    for name in ("cmdline", "environ"):
        assert TEST_PASSWORD.encode() not in Path(f"/proc/{pid}/{name}").read_bytes()
    assert [p.name for p in control_dir.iterdir() if p.name.startswith("askpass")] == []
    assert caplog.records  # the master's argv was logged...
    assert all(
        TEST_PASSWORD not in record.getMessage() for record in caplog.records
    )  # ...not the secret


def test_a_wrong_password_is_tried_once(password_server: SshServer, control_dir: Path) -> None:
    config = password_config(password_server, control_dir)
    c = MuxConnection(password_server.alias, config=config, connect_kwargs={"password": "not-it"})
    with pytest.raises(AuthenticationFailed, match="Permission denied"):
        c.run("true")
    assert password_server.log.read_text().count("Failed password for") == 1
    assert password_server.logins() == 0
