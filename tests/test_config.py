"""Unit tests of the mux config subtree: defaults, precedence, validation."""

from __future__ import annotations

from pathlib import Path

import pytest
from fabric import Config
from fabrun import fab

from fabric_mux import MuxConnection
from fabric_mux.config import DEFAULTS, MuxConfig, mux_settings
from fabric_mux.exceptions import BadConfig
from fabric_mux.testing import SshServer


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


@pytest.mark.parametrize(
    ("key", "value", "takes"),
    [
        ("persist", "ten minutes", "ControlPersist"),
        ("persist", -5, "ControlPersist"),
        ("persist", [600], "ControlPersist"),
        ("parallel", "maybe", "true or false"),
        ("parallel", 2, "true or false"),
        ("enabled", "enabled", "true or false"),
        ("control_dir", 7, "a path"),
        ("control_path", ["~/.ssh/s"], "a path"),
        ("max_sessions", "ten", "a whole number, 1 or more"),
        ("max_sessions", 0, "a whole number, 1 or more"),
        ("pool_size", 2.5, "a whole number, 1 or more"),
        ("masters_at_once", True, "a whole number, 1 or more"),
        ("connect_retries", -1, "a whole number, 0 or more"),
        ("reply_timeout", "soon", "a number of seconds"),
        ("ssh_path", 7, "a program"),
        ("ssh_options", {"Compression": "yes"}, "ssh options"),
        ("ssh_options", [7], "ssh options"),
    ],
)
def test_a_value_of_the_wrong_kind_is_one_line_naming_the_key(
    key: str, value: object, takes: str
) -> None:
    with pytest.raises(BadConfig) as raised:
        mux_settings(Config(overrides={"mux": {key: value}}))
    message = str(raised.value)
    assert f"mux.{key} takes" in message and takes in message and repr(value) in message
    assert "\n" not in message
    assert isinstance(raised.value, ValueError) and raised.value.code == 1  # fab: exit 1


@pytest.mark.parametrize(
    ("given", "persist"),
    [("10m", "10m"), ("1h30m", "1h30m"), (" 90 ", "90"), ("no", "1"), ("yes", "yes"), (0, "1")],
)
def test_persist_takes_what_controlpersist_takes(given: object, persist: str) -> None:
    assert mux_settings(Config(overrides={"mux": {"persist": given}})).persist == persist


def test_text_from_the_environment_reads_as_its_key_takes_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in (
        ("FABRIC_MUX_PARALLEL", "yes"),
        ("FABRIC_MUX_POOL_SIZE", "8"),
        ("FABRIC_MUX_CONTROL_DIR", "/tmp/x"),
        ("FABRIC_MUX_PREFIX", "0"),  # invoke reads a bool default's text itself
    ):
        monkeypatch.setenv(name, value)
    config = MuxConfig()
    config.load_shell_env()
    settings = mux_settings(config)
    assert settings.parallel is True and settings.pool_size == 8
    assert settings.control_dir == "/tmp/x" and settings.prefix is False


def test_fab_says_which_key_is_wrong_in_one_line_and_logs_in_nowhere(
    tmp_path: Path, sshd: SshServer, control_dir: Path
) -> None:
    (tmp_path / "fabfile.py").write_text(
        "from fabric import task\n\n@task\ndef t(c):\n    c.run('true')\n"
    )
    (tmp_path / "fabric.yaml").write_text(
        "tasks:\n  executor_class: fabric_mux.MuxExecutor\n"
        f"mux:\n  control_dir: {control_dir}\n  persist: ten minutes\n"
    )
    for name in ("fab", "fabmux"):
        proc = fab(tmp_path, sshd.ssh_config, sshd.alias, "t", name=name)
        assert proc.returncode == 1
        assert proc.stderr.strip() == (
            "fabric-mux: mux.persist takes seconds, a time as ControlPersist takes it "
            "(10m), or yes/no, not 'ten minutes'"
        )
    assert sshd.logins() == 0


def test_reading_a_section_asks_invoke_nothing_the_root_lacks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # invoke looks up "_keypath" and "_root" on the root for every section read,
    # and the root's AttributeError first lists every attribute of its class:
    # the most costly part of a parallel run's host, answered at once here.
    from invoke.config import DataProxy

    asked: list[str] = []
    invoke_getattr = DataProxy.__getattr__

    def counting(self: DataProxy, key: str) -> object:
        asked.append(key)
        return invoke_getattr(self, key)

    monkeypatch.setattr(DataProxy, "__getattr__", counting)
    config = MuxConfig()
    asked.clear()
    assert config.run.echo is False
    assert config.run._keypath == ("run",)
    assert not config._is_leaf
    assert asked == ["run", "echo", "run"]
    with pytest.raises(AttributeError, match="No attribute or config key found for 'nothing'"):
        config.nothing  # noqa: B018
