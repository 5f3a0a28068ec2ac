"""The files ``inv bench peers`` writes for its peers, and how a row's cell reads."""

from __future__ import annotations

import configparser
import json
import shlex
from pathlib import Path
from typing import Any

from bench.fleetbase import Row, timing
from bench.peerfiles import (
    Targets,
    ansible_config,
    ansible_inventory,
    pssh_spec,
    pyinfra_inventory,
)

TARGETS = Targets(
    ports={"fl1": 40001, "fl2": 40002, "fl3": 40001},
    address="127.0.0.1",
    user="bench",
    key=Path("/tmp/a folder/client_ed25519"),
    ssh_config=Path("/tmp/a folder/ssh_config"),
    known_by_address=Path("/tmp/a folder/known_hosts_by_address"),
)


def test_pyinfra_inventory_names_every_host_with_its_port_and_strict_host_keys() -> None:
    namespace: dict[str, Any] = {}
    exec(pyinfra_inventory(TARGETS), namespace)
    hosts = namespace["hosts"]
    assert [name for name, _ in hosts] == ["fl1", "fl2", "fl3"]
    assert [data["ssh_port"] for _, data in hosts] == [40001, 40002, 40001]
    for _, data in hosts:
        assert data["ssh_hostname"] == "127.0.0.1"
        assert data["ssh_user"] == "bench"
        assert data["ssh_key"] == "/tmp/a folder/client_ed25519"
        assert data["ssh_known_hosts_file"] == "/tmp/a folder/known_hosts_by_address"
        assert data["ssh_strict_host_key_checking"] == "yes"
        assert data["ssh_allow_agent"] is False


def test_ansible_inventory_hands_the_ssh_config_to_openssh_quoted() -> None:
    inventory = json.loads(ansible_inventory(TARGETS))
    assert list(inventory["all"]["hosts"]) == ["fl1", "fl2", "fl3"]
    common = inventory["all"]["vars"]["ansible_ssh_common_args"]
    # Ansible splits these arguments as a shell would.
    assert shlex.split(common) == ["-F", "/tmp/a folder/ssh_config"]


def test_ansible_config_puts_control_sockets_in_the_folder_given() -> None:
    parser = configparser.ConfigParser()
    parser.read_string(ansible_config(Path("/tmp/home"), Path("/tmp/fmb-pc-x")))
    assert parser["ssh_connection"]["control_path_dir"] == "/tmp/fmb-pc-x"
    assert parser["defaults"]["home"] == "/tmp/home"
    # Nothing that would weaken or speed up Ansible behind the reader's back.
    assert "host_key_checking" not in parser["defaults"]
    assert "pipelining" not in parser["ssh_connection"]


def test_pssh_spec_lists_address_and_port_by_host() -> None:
    spec = json.loads(pssh_spec(TARGETS))
    assert spec["hosts"] == [
        ["fl1", "127.0.0.1", 40001],
        ["fl2", "127.0.0.1", 40002],
        ["fl3", "127.0.0.1", 40001],
    ]
    assert spec["user"] == "bench"
    assert spec["key"] == "/tmp/a folder/client_ed25519"


def test_a_cell_shows_logins_and_flags_the_unexpected() -> None:
    assert timing(Row("r", samples=[2.5, 2.31], logins=[32, 32], expected=32)) == (
        "2.31 s (32 logins)"
    )
    assert timing(Row("r", samples=[2.5, 2.31], logins=[32, 40], expected=32)) == (
        "2.31 s (**logins 32, 40: 32 expected**)"
    )
    assert timing(Row("r", samples=[1.0], logins=[3])) == "1.00 s (3 logins)"
    assert timing(Row("r", failure="not installed")) == "not installed"
    assert timing(Row("r", samples=[float("inf")], logins=[0], expected=0)).startswith(
        "did not finish in"
    )
