"""The files each peer of ``inv bench peers`` reads: its inventory, its settings and
its two commands a host, all naming the fleet's hosts, keys and known hosts."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ANSIBLE_PLAYBOOK",
    "PYINFRA_DEPLOY",
    "Targets",
    "ansible_config",
    "ansible_inventory",
    "pssh_spec",
    "pyinfra_inventory",
]

#: Two tasks, each one ``true`` on every host; no facts gathered (nor asked for).
ANSIBLE_PLAYBOOK = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: first
      ansible.builtin.command: "true"
    - name: second
      ansible.builtin.command: "true"
"""

#: Two operations, each one ``true`` on every host.
PYINFRA_DEPLOY = """\
from pyinfra.operations import server

server.shell(name="first", commands=["true"])
server.shell(name="second", commands=["true"])
"""


@dataclass(frozen=True)
class Targets:
    """The hosts as the fleet's ssh_config names them, and what a client that reads
    no ssh_config must be told instead."""

    #: Host aliases, each with the port of its relay on :attr:`address`.
    ports: dict[str, int]
    address: str
    user: str
    key: Path
    ssh_config: Path
    #: The hosts' keys by address (``[ADDRESS]:PORT``), as paramiko and libssh2 look them up.
    known_by_address: Path


def pssh_spec(targets: Targets) -> str:
    """The JSON that ``bench/peer_pssh.py`` reads."""
    hosts = [[name, targets.address, port] for name, port in targets.ports.items()]
    return json.dumps({"hosts": hosts, "user": targets.user, "key": str(targets.key)}, indent=1)


def pyinfra_inventory(targets: Targets) -> str:
    """An ``inventory.py``: every host with its address, port, user and key, host
    keys checked strictly against :attr:`Targets.known_by_address`."""
    data = {
        "ssh_hostname": targets.address,
        "ssh_user": targets.user,
        "ssh_key": str(targets.key),
        "ssh_known_hosts_file": str(targets.known_by_address),
        "ssh_strict_host_key_checking": "yes",
        # Read instead of ~/.ssh/config; the settings above win over it.
        "ssh_config_file": str(targets.ssh_config),
        "ssh_allow_agent": False,
        "ssh_look_for_keys": False,
    }
    hosts = [(name, {**data, "ssh_port": port}) for name, port in targets.ports.items()]
    return f"hosts = {hosts!r}\n"


def ansible_inventory(targets: Targets) -> str:
    """A YAML inventory (written as JSON, which is YAML): the hosts by their aliases,
    which OpenSSH resolves with the fleet's ssh_config."""
    common = shlex.join(["-F", str(targets.ssh_config)])
    inventory = {
        "all": {
            "hosts": {name: {} for name in targets.ports},
            "vars": {"ansible_ssh_common_args": common},
        }
    }
    return json.dumps(inventory, indent=1) + "\n"


def ansible_config(home: Path, control_dir: Path) -> str:
    """An ``ansible.cfg``: Ansible's defaults (ControlPersist 60 s, host key checking,
    no pipelining), its files and its ControlPersist sockets in the bench's folders."""
    return (
        "[defaults]\n"
        f"home = {home}\n"
        f"local_tmp = {home / 'tmp'}\n"
        "[ssh_connection]\n"
        f"control_path_dir = {control_dir}\n"
    )
