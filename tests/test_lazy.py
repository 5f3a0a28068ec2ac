"""A MuxConnection is built without paramiko's ssh_config lookup; Fabric's attributes
are worked out when first read, and equal what stock Fabric gives."""

from __future__ import annotations

from pathlib import Path

import fabric
import pytest
from paramiko import SSHConfig
from pytest_mock import MockerFixture

from fabric_mux import MuxConnection

SSH_CONFIG = """\
Host web1
    HostName 10.0.0.5
    User deploy
    Port 2222
    ForwardAgent yes
    ConnectTimeout 7
    IdentityFile /keys/web1
Host jumped
    ProxyJump bastion
"""


@pytest.fixture
def config(tmp_path: Path) -> fabric.Config:
    path = tmp_path / "ssh_config"
    path.write_text(SSH_CONFIG)
    return fabric.Config(runtime_ssh_path=str(path))


@pytest.mark.parametrize(
    ("host", "kwargs"),
    [
        ("web1", {}),
        ("web1", {"user": "other", "port": 22, "forward_agent": False, "connect_timeout": 3}),
        ("root@web1:2200", {}),
        ("plain", {}),
        ("jumped", {}),
        ("web1", {"connect_kwargs": {"key_filename": ["/keys/mine"]}}),
    ],
)
def test_fabrics_attributes_are_what_stock_fabric_gives(
    config: fabric.Config, host: str, kwargs: dict[str, object]
) -> None:
    stock = fabric.Connection(host, config=config, **kwargs)
    ours = MuxConnection(host, config=config, **kwargs)  # type: ignore[arg-type]
    for name in ("original_host", "host", "user", "port", "forward_agent", "connect_timeout"):
        assert getattr(ours, name) == getattr(stock, name), name
    assert ours.ssh_config == stock.ssh_config
    # (as sets: stock Fabric's constructor copies ssh_config's identities into
    # the shared config, so whichever comes second sees them twice)
    assert set(ours.connect_kwargs.get("key_filename", [])) == set(
        stock.connect_kwargs.get("key_filename", [])
    )
    assert str(ours.gateway) == str(stock.gateway)


def test_building_one_reads_no_ssh_config_and_reading_one_attribute_reads_it_once(
    config: fabric.Config, mocker: MockerFixture
) -> None:
    lookup = mocker.spy(SSHConfig, "lookup")
    connections = [MuxConnection(f"host{n}", config=config) for n in range(50)]
    assert lookup.call_count == 0
    assert connections[0].host == "host0" and connections[0].user == config.user
    assert lookup.call_count == 1
    connections[0].user = "changed"  # assigning works as on a stock Connection
    assert connections[0].user == "changed"
    assert lookup.call_count == 1


def test_shorthand_given_twice_is_refused_as_stock_does(config: fabric.Config) -> None:
    with pytest.raises(ValueError, match="both shorthand and kwarg"):
        MuxConnection("u@web1", user="v", config=config)


@pytest.mark.parametrize(
    ("name", "value", "told"),
    [
        ("user", "deploy2", {"user": "deploy2"}),
        ("port", 2299, {"port": 2299}),
        ("port", "2299", {"port": 2299}),
        ("connect_timeout", 4, {"connect_timeout": 4}),
        ("forward_agent", False, {"options": ("ForwardAgent=no",)}),
        ("host", "10.0.0.9", {"options": ("HostName=10.0.0.9",)}),
        ("gateway", False, {"options": ("ProxyCommand=none",)}),
    ],
)
def test_an_assigned_attribute_is_told_to_ssh_as_if_given(
    config: fabric.Config, name: str, value: object, told: dict[str, object]
) -> None:
    c = MuxConnection("web1", config=config)
    setattr(c, name, value)
    assert getattr(c, name) == value
    target = c.ssh_target()
    for field, expected in told.items():
        if field == "options":
            assert isinstance(expected, tuple) and set(expected) <= set(target.options)
        else:
            assert getattr(target, field) == expected


def test_connect_kwargs_changed_in_place_reach_ssh(config: fabric.Config) -> None:
    c = MuxConnection("plain", config=config)
    c.connect_kwargs["key_filename"] = ["/keys/added"]
    c.connect_kwargs["timeout"] = 9
    target = c.ssh_target()
    assert target.identity_files == ("/keys/added",)
    assert target.connect_timeout == 9


def test_the_config_is_read_when_the_connection_is_made_as_stock_does(
    config: fabric.Config,
) -> None:
    stock = fabric.Connection("plain", config=config)
    ours = MuxConnection("plain", config=config)
    config.user, config.port = "later", 2022
    assert (ours.user, ours.port) == (stock.user, stock.port) != ("later", 2022)
    target = ours.ssh_target()
    assert target.user is None and target.port is None  # the defaults: ssh's own


def test_a_port_given_as_text_stays_text_as_stock_keeps_it(config: fabric.Config) -> None:
    stock = fabric.Connection("plain", port="2201", config=config)
    ours = MuxConnection("plain", port="2201", config=config)  # type: ignore[arg-type]
    assert ours.port == stock.port == "2201"
    assert ours.ssh_target().port == 2201
