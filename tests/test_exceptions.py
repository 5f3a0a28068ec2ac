"""Exceptions: each also the type stock Fabric raises there; all pickle and copy."""

from __future__ import annotations

import copy
import pickle
import socket
from pathlib import Path

import fabric
import paramiko
import pytest
from fabric import SerialGroup
from fabric.exceptions import GroupException
from invoke.exceptions import Exit
from paramiko.ssh_exception import NoValidConnectionsError

from fabric_mux import MuxConnection
from fabric_mux import exceptions as errors
from fabric_mux.testing import SshServer

ARGV = ["ssh", "-M", "h"]


def every_error() -> list[errors.MuxError]:
    return [
        errors.SshNotFound("no ssh"),
        errors.UnsupportedSsh("too old"),
        errors.SecretWithheld("not safe"),
        errors.ControlDirUnsafe("unsafe"),
        errors.ControlDirUnusable("unusable"),
        errors.ConfigChanged("changed"),
        errors.MasterNotOurs("/run/x", 1000, "bob (uid 1000)"),
        errors.MuxProtocolError("bad packet"),
        errors.MasterUnavailable("none there"),
        errors.RequestDenied("no"),
        errors.MasterNotResponding("silent"),
        errors.SessionRefused("h", "MaxSessions"),
        errors.ForwardFailed("busy"),
        errors.BadForward("port 70000"),
        errors.MasterLost("gone"),
        errors.OutOfDescriptors("none left"),
        errors.BadConfig("mux.persist takes seconds"),
        errors.EmptyHostList("no hosts in -H ''"),
        *(
            cls("h", ARGV, 255, "ssh said so", "a note")
            for cls in (
                errors.MasterStartFailed,
                errors.ConnectFailed,
                errors.UnknownHost,
                errors.ServerUnreachable,
                errors.ConnectTimedOut,
                errors.AuthenticationFailed,
                errors.HostKeyFailed,
                errors.BadSshOption,
            )
        ),
    ]


@pytest.mark.parametrize("error", every_error(), ids=lambda e: type(e).__name__)
def test_every_error_pickles_and_copies_with_its_fields(error: errors.MuxError) -> None:
    for twin in (pickle.loads(pickle.dumps(error)), copy.copy(error), copy.deepcopy(error)):
        assert type(twin) is type(error)
        assert str(twin) == str(error)
        assert twin.__dict__ == error.__dict__
        if isinstance(error, OSError):
            assert (twin.errno, twin.strerror) == (error.errno, error.strerror)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "error", [errors.BadConfig("mux.persist takes seconds"), errors.EmptyHostList("no hosts")]
)
def test_what_fab_prints_says_whose_it_is_once(error: errors.MuxError) -> None:
    # Every message is bare, and whoever prints it says it is fabric-mux's; for an
    # Exit, fab prints its message as it is.
    assert not str(error).startswith("fabric-mux")
    assert error.message == f"fabric-mux: {error}"  # what invoke's Program prints
    assert isinstance(error, Exit) and error.code == 1


@pytest.mark.parametrize(
    ("stderr", "stock"),
    [
        ("ssh: Could not resolve hostname nope: Name or service not known", socket.gaierror),
        ("ssh: connect to host h port 22: Connection refused", NoValidConnectionsError),
        ("ssh: connect to host h port 22: No route to host", NoValidConnectionsError),
        # paramiko's connect timeout: socket.timeout (TimeoutError from Python 3.10).
        ("ssh: connect to host h port 22: Connection timed out", socket.timeout),
        ("u@h: Permission denied (publickey).", paramiko.AuthenticationException),
        ("Host key verification failed.", paramiko.SSHException),
        ("kex_exchange_identification: Connection closed by remote host", paramiko.SSHException),
    ],
)
def test_each_failure_is_also_what_stock_fabric_raises(stderr: str, stock: type) -> None:
    error = errors.classify_ssh_failure("h", ARGV, 255, stderr)
    assert isinstance(error, errors.MuxError)
    assert isinstance(error, stock)
    assert stderr in str(error)


def test_an_unknown_host_in_a_group_is_a_gaierror(sshd: SshServer, config: fabric.Config) -> None:
    # What Fabric's own integration suite asserts of a Group of stock connections.
    bad_host = MuxConnection("nopebadhost1.invalid", config=config)
    group = SerialGroup.from_connections([bad_host, MuxConnection(sshd.alias, config=config)])
    with pytest.raises(GroupException) as failure:
        group.run("true", hide=True)
    results = failure.value.result
    bad = [value for c, value in results.items() if c.original_host == "nopebadhost1.invalid"]
    assert len(bad) == 1 and isinstance(bad[0], socket.gaierror)
    good = [value for c, value in results.items() if c.original_host == sshd.alias]
    assert good[0].ok


def test_a_refused_port_is_what_paramiko_raises(sshd: SshServer, control_dir: Path) -> None:
    sshd.stop()
    config = sshd.fabric_config({"mux": {"control_dir": str(control_dir), "connect_retries": 0}})
    with pytest.raises(NoValidConnectionsError):
        MuxConnection(sshd.alias, config=config).run("true")
