"""Unit tests of the mux config subtree: defaults, precedence, validation."""

from __future__ import annotations

from pathlib import Path

import pytest
from fabric import Config

from fabric_mux import MuxConnection
from fabric_mux.config import DEFAULTS, MuxConfig, mux_settings


def test_defaults_when_the_config_has_no_mux_subtree() -> None:
    settings = mux_settings(Config())
    assert settings.enabled is True
    assert settings.persist == "600"
    assert settings.persists
    assert settings.max_sessions == 10
    assert settings.server_alive == (15, 3)
    assert settings.control_dir is None


def test_given_keys_override_defaults() -> None:
    config = Config(
        overrides={
            "mux": {"persist": 0, "ssh_options": "Compression=yes", "server_alive_interval": None}
        }
    )
    settings = mux_settings(config)
    assert settings.persist == "1"
    assert not settings.persists
    assert settings.ssh_options == ("Compression=yes",)
    assert settings.server_alive is None


def test_unknown_key_is_an_error_not_silence() -> None:
    with pytest.raises(ValueError, match="persits"):
        mux_settings(Config(overrides={"mux": {"persits": 5}}))


def test_mux_config_knows_the_subtree_so_env_vars_map(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FABRIC_MUX_PERSIST", "42")
    config = MuxConfig()
    assert config.mux.persist == DEFAULTS["persist"]
    config.load_shell_env()
    assert mux_settings(config).persist == "42"


def test_connections_leave_a_shared_config_untouched(tmp_path: Path) -> None:
    # Stock Fabric writes key_filename and inline_ssh_env into the config it is
    # given; invoke rebuilds the config on each write, which threads sharing it
    # would see half done.
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text("Host web1\n    IdentityFile /keys/web1\n")
    config = Config(runtime_ssh_path=str(ssh_config))
    connection = MuxConnection("web1", config=config, gateway="nc %h %p")
    assert connection.connect_kwargs["key_filename"] == ["/keys/web1"]
    assert config._modifications == {}
    assert "key_filename" not in config.connect_kwargs
