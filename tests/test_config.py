"""Unit tests of the mux config subtree: defaults, precedence, validation."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
from fabric import Config
from fabrun import fab

from fabric_mux import MuxConnection
from fabric_mux.cli import masters_in
from fabric_mux.config import (
    DEFAULTS,
    KEYS,
    MuxConfig,
    checked_flag,
    load_environment,
    mux_settings,
)
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


def _reference_text() -> ModuleType:
    """docs/_ext/reftext.py: the reST the site's configuration reference is made of."""
    path = Path(__file__).parent.parent / "docs" / "_ext" / "reftext.py"
    spec = importlib.util.spec_from_file_location("reftext", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_key_has_a_meaning_in_the_reference() -> None:
    """The configuration reference is made from KEYS: every key of DEFAULTS is there
    once, with what it takes, its variable and a meaning, and the page shows them."""
    assert [key.name for key in KEYS] == list(DEFAULTS)
    for key in KEYS:
        assert key.takes.strip(), key.name
        assert key.meaning.strip().endswith("."), key.name
        assert key.variable == f"FABRIC_MUX_{key.name.upper()}"
    text = "\n".join(_reference_text().config_reference())
    for key in KEYS:
        assert text.count(f".. confval:: mux.{key.name}\n") == 1
        assert f":Environment: ``{key.variable}``" in text
        assert key.meaning.split()[0] in text
    page = Path(__file__).parent.parent / "docs" / "reference" / "configuration.rst"
    assert ".. mux-config::" in page.read_text()


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
        # Numbers in other scripts' digits: str.isdigit() and \d take them, int() may not.
        ("pool_size", "\u00b2", "a whole number, 1 or more"),
        ("max_sessions", "\u0661", "a whole number, 1 or more"),
        ("connect_timeout", "\uff19", "a whole number, 0 or more"),
        ("serial", "\u0661", "a number of hosts a batch"),
        ("max_fail", "\u0663", "a number of hosts (0 or more)"),
        ("persist", "\u0661\u0660m", "ControlPersist"),
        ("persist", 2**40, "ControlPersist"),
        ("reply_timeout", "\u0661", "a number of seconds"),
        # Past what a socket's timeout can hold: an OverflowError deep in a session.
        ("reply_timeout", "inf", "a number of seconds, at most 86400"),
        ("reply_timeout", "1e400", "a number of seconds, at most 86400"),
        ("reply_timeout", float("inf"), "a number of seconds, at most 86400"),
        ("reply_timeout", float("nan"), "a number of seconds, at most 86400"),
        pytest.param("reply_timeout", 10**400, "at most 86400", id="reply_timeout-10**400"),
        # A line break ends ssh's option: ssh would keep the first line only.
        ("control_dir", "/tmp/x\ny", "a path without a double quote, a line break"),
        ("control_path", "~/.ssh/cm\n%C", "a path without a double quote, a line break"),
        ("report", "/tmp/r\0.json", "a path without"),
        # Each option goes after -o: this one would be no option's name.
        ("ssh_options", "-oProxyCommand=x", "none starting with -"),
        ("ssh_options", ["Compression=yes", "-v"], "none starting with -"),
    ],
)
def test_a_value_of_the_wrong_kind_is_one_line_naming_the_key(
    key: str, value: object, takes: str
) -> None:
    with pytest.raises(BadConfig) as raised:
        mux_settings(Config(overrides={"mux": {key: value}}))
    message = str(raised.value)
    shown = repr(value) if len(repr(value)) <= 100 else repr(value)[:60]
    assert f"mux.{key} takes" in message and takes in message and shown in message
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
        ("FABRIC_MUX_PREFIX", "0"),
        ("FABRIC_MUX_ENABLED", "false"),  # invoke made any text but "0" true
        ("FABRIC_MUX_USER_MASTERS", "off"),
        ("FABRIC_MUX_PERSIST", "10m"),  # invoke: int("10m"), a traceback
        ("FABRIC_MUX_CONNECT_TIMEOUT", " 20 "),
        ("FABRIC_MUX_REPLY_TIMEOUT", "0"),  # no limit, as 0 is in fabric.yaml
        ("FABRIC_MUX_MASTERS_AT_ONCE", ""),  # set but empty: unset
        ("FABRIC_MUX_SSH_PATH", "/opt/ssh/bin/ssh"),
        ("FABRIC_MUX_SSH_OPTIONS", "Compression=yes\n\n  ProxyCommand=nc %h %p  \n"),
    ):
        monkeypatch.setenv(name, value)
    config = MuxConfig()
    config.load_shell_env()
    settings = mux_settings(config)
    assert settings.parallel is True and settings.pool_size == 8
    assert settings.control_dir == "/tmp/x" and settings.prefix is False
    assert settings.enabled is False and settings.user_masters is False
    assert settings.persist == "10m" and settings.connect_timeout == 20
    assert settings.reply_timeout is None and settings.masters_at_once is None
    assert settings.ssh_path == "/opt/ssh/bin/ssh"
    assert settings.ssh_options == ("Compression=yes", "ProxyCommand=nc %h %p")


@pytest.mark.parametrize(
    ("text", "persist"), [("10m", "10m"), ("no", "1"), ("yes", "yes"), ("0", "1"), ("90", "90")]
)
def test_persist_from_the_environment_is_persist_from_fabric_yaml(
    monkeypatch: pytest.MonkeyPatch, text: str, persist: str
) -> None:
    monkeypatch.setenv("FABRIC_MUX_PERSIST", text)
    config = MuxConfig()
    config.load_shell_env()
    assert mux_settings(config).persist == persist
    assert mux_settings(Config(overrides={"mux": {"persist": text}})).persist == persist


@pytest.mark.parametrize(
    ("name", "text", "takes"),
    [
        ("FABRIC_MUX_PERSIST", "bogus", "mux.persist takes seconds"),
        ("FABRIC_MUX_CONNECT_TIMEOUT", "abc", "mux.connect_timeout takes a whole number"),
        ("FABRIC_MUX_MAX_SESSIONS", "", "mux.max_sessions takes a whole number, 1 or more"),
        ("FABRIC_MUX_ENABLED", "nope", "mux.enabled takes true or false"),
        ("FABRIC_MUX_REPLY_TIMEOUT", "-1", "mux.reply_timeout takes a number of seconds"),
        ("FABRIC_MUX_CONTROL_PATH", '/tmp/"s"', "mux.control_path takes a path without a"),
    ],
)
def test_a_wrong_variable_is_the_one_line_error_of_fabric_yaml(
    monkeypatch: pytest.MonkeyPatch, name: str, text: str, takes: str
) -> None:
    monkeypatch.setenv(name, text)
    config = MuxConfig()
    config.load_shell_env()  # no traceback of invoke's cast
    with pytest.raises(BadConfig) as raised:
        mux_settings(config)
    message = str(raised.value)
    assert message.startswith(takes) and message.endswith(f", not {text!r}"), message
    assert "\n" not in message


def test_a_config_without_mux_defaults_reads_the_variables_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Stock fab's config: invoke maps only the keys a config already has.
    monkeypatch.setenv("FABRIC_MUX_PARALLEL", "1")
    monkeypatch.setenv("FABRIC_MUX_SSH_OPTIONS", "Compression=yes")
    monkeypatch.setenv("FABRIC_MUX_POOL_SIZE", "9")
    config = Config(overrides={"mux": {"pool_size": 3}})
    load_environment(config)
    settings = mux_settings(config)
    assert settings.parallel and settings.ssh_options == ("Compression=yes",)
    assert settings.pool_size == 3  # the levels above the environment still win
    assert config.run.echo is False  # invoke's own keys as before


def test_a_flag_is_read_as_its_key_and_named_in_its_error() -> None:
    assert checked_flag("-z/--pool-size", "pool_size", "4") == "4"
    with pytest.raises(
        BadConfig, match=r"^-z/--pool-size takes a whole number, 1 or more, not 'abc'$"
    ):
        checked_flag("-z/--pool-size", "pool_size", "abc")
    with pytest.raises(BadConfig, match=r"^--mux-control-path takes a path without a double quote"):
        checked_flag("--mux-control-path", "control_path", '/tmp/a"b')


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


# -- FABRIC_MUX_* variables in real runs --------------------------------------------------

RUNS_FABFILE = """
from fabric import task

@task
def kind(c):
    print(type(c).__name__)

@task
def probe(c):
    c.run('echo "$FMUX_PROBE:$FMUX_SECOND"')
"""


@pytest.fixture
def env_project(tmp_path: Path, control_dir: Path) -> Path:
    (tmp_path / "fabfile.py").write_text(RUNS_FABFILE)
    (tmp_path / "fabric.yaml").write_text(
        f"tasks:\n  executor_class: fabric_mux.MuxExecutor\nmux:\n  control_dir: {control_dir}\n"
    )
    return tmp_path


def test_mux_enabled_false_in_the_environment_is_off(
    env_project: Path, sshd: SshServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FABRIC_MUX_ENABLED", "false")
    for name in ("fab", "fabmux"):
        done = fab(env_project, sshd.ssh_config, sshd.alias, "kind", name=name)
        assert (done.returncode, done.stdout) == (0, "Connection\n"), done.stderr


def test_mux_parallel_from_the_environment_makes_a_parallel_run(
    env_project: Path, sshd: SshServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    hosts = ",".join(sshd.routes(2, prefix="e"))
    monkeypatch.setenv("FABRIC_MUX_PARALLEL", "1")
    for name in ("fab", "fabmux"):
        done = fab(env_project, sshd.ssh_config, hosts, "kind", name=name)
        assert done.returncode == 0, done.stderr
        assert "fabric-mux: kind on 2 hosts in parallel" in done.stderr, (name, done.stderr)


def master_argv_in(control_dir: Path) -> list[str]:
    """The argv of the one master in ``control_dir``."""
    (info,) = [row for row in masters_in(control_dir) if row.alive]
    assert info.pid is not None
    return Path(f"/proc/{info.pid}/cmdline").read_bytes().decode().split("\0")


def test_mux_persist_and_ssh_options_from_the_environment_reach_the_master(
    env_project: Path, sshd: SshServer, control_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FABRIC_MUX_PERSIST", "10m")
    # One option a line; a value with spaces needs no quotes.
    monkeypatch.setenv(
        "FABRIC_MUX_SSH_OPTIONS", "SetEnv=FMUX_PROBE=42 FMUX_SECOND=43\nCompression=yes\n"
    )
    done = fab(env_project, sshd.ssh_config, sshd.alias, "probe", name="fabmux")
    assert (done.returncode, done.stdout) == (0, "42:43\n"), done.stderr
    argv = master_argv_in(control_dir)
    assert "ControlPersist=10m" in argv
    assert "Compression=yes" in argv and "SetEnv=FMUX_PROBE=42 FMUX_SECOND=43" in argv


@pytest.mark.parametrize(
    ("name", "text", "said"),
    [
        ("FABRIC_MUX_PERSIST", "bogus", "mux.persist takes seconds, a time as ControlPersist "
         "takes it (10m), or yes/no, not 'bogus'"),
        ("FABRIC_MUX_CONNECT_TIMEOUT", "abc", "mux.connect_timeout takes a whole number, 0 or "
         "more, not 'abc'"),
    ],
)  # fmt: skip
def test_a_wrong_variable_is_one_line_and_logs_in_nowhere(
    env_project: Path,
    sshd: SshServer,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    text: str,
    said: str,
) -> None:
    monkeypatch.setenv(name, text)
    for program in ("fab", "fabmux"):
        done = fab(env_project, sshd.ssh_config, sshd.alias, "kind", name=program)
        assert (done.returncode, done.stderr) == (1, f"fabric-mux: {said}\n"), program
    done = fab(env_project, sshd.ssh_config, sshd.alias, "-P", "kind", name="fabmux")
    assert (done.returncode, done.stderr) == (1, f"fabric-mux: {said}\n")
    assert sshd.logins() == 0


@pytest.mark.parametrize(
    ("flag", "value", "said"),
    [
        ("-z", "\u00b2", "-z/--pool-size takes a whole number, 1 or more, not '\u00b2'"),
        ("--serial", "\u0661", "--serial takes a number of hosts a batch"),
        ("--mux-persist", "\u0661\u0660m", "--mux-persist takes seconds"),
    ],
)
def test_a_number_in_other_digits_is_one_line(
    env_project: Path, sshd: SshServer, flag: str, value: str, said: str
) -> None:
    done = fab(env_project, sshd.ssh_config, sshd.alias, flag, value, "kind", name="fabmux")
    assert done.returncode == 1 and done.stderr.startswith(f"fabric-mux: {said}"), done.stderr
    assert len(done.stderr.splitlines()) == 1
    assert sshd.logins() == 0


@pytest.mark.parametrize(
    ("name", "text", "said"),
    [
        ("FABRIC_MUX_POOL_SIZE", "\u00b2", "mux.pool_size takes a whole number"),
        ("FABRIC_MUX_REPLY_TIMEOUT", "inf", "mux.reply_timeout takes a number of seconds"),
        ("FABRIC_MUX_REPLY_TIMEOUT", "1e400", "mux.reply_timeout takes a number of seconds"),
        ("FABRIC_MUX_CONTROL_DIR", "/tmp/x\ny", "mux.control_dir takes a path without"),
        ("FABRIC_MUX_SSH_OPTIONS", "-oProxyCommand=x", "mux.ssh_options takes a list"),
    ],
)
def test_a_variable_that_gave_a_traceback_is_one_line(
    env_project: Path, sshd: SshServer, monkeypatch: pytest.MonkeyPatch, name: str, text: str,
    said: str,
) -> None:  # fmt: skip
    monkeypatch.setenv(name, text)
    for flags in ([], ["-P"]):
        done = fab(env_project, sshd.ssh_config, sshd.alias, *flags, "--", "true", name="fabmux")
        assert done.returncode == 1 and done.stderr.startswith(f"fabric-mux: {said}"), done.stderr
        assert len(done.stderr.splitlines()) == 1
    assert sshd.logins() == 0


def test_a_wrong_pool_size_flag_is_one_line(env_project: Path, sshd: SshServer) -> None:
    for flag in ("-z", "--pool-size"):
        done = fab(env_project, sshd.ssh_config, sshd.alias, "-P", flag, "abc", "kind",
                   name="fabmux")  # fmt: skip
        assert (done.returncode, done.stderr) == (
            1,
            "fabric-mux: -z/--pool-size takes a whole number, 1 or more, not 'abc'\n",
        )
    assert sshd.logins() == 0
