"""Unit tests of the argv decisions: settings in, ssh argv out."""

from __future__ import annotations

import subprocess

import pytest

from fabric_mux.argv import (
    MAX_CONTROL_PATH,
    NOT_IDENTITY,
    THIS_RUN_ONLY,
    SshTarget,
    config_query_argv,
    connect_kwargs_options,
    control_socket_name,
    expand_path,
    fallback_options,
    master_argv,
    master_identity,
    max_control_path,
    parse_resolved_config,
    persist_value,
    quote_option_value,
    ssh_options,
    target_args,
    this_run_only,
)

RESOLVED = (
    "user deploy\n"
    "hostname 10.0.0.5\n"
    "port 22\n"
    "identityfile ~/.ssh/id_ed25519\n"
    "connecttimeout none\n"
    "serveraliveinterval 0\n"
)


def test_alias_passes_through_with_nothing_else() -> None:
    assert config_query_argv("/usr/bin/ssh", SshTarget("web1")) == [
        "/usr/bin/ssh",
        "-G",
        "--",
        "web1",
    ]


def test_explicit_settings_become_options() -> None:
    target = SshTarget(
        "web1",
        user="deploy",
        port=2222,
        config_file="/etc/fab/ssh_config",
        identity_files=("/k/one", "/k/two"),
        connect_timeout=7,
        options=("ForwardAgent=yes", "Compression=yes"),
    )
    assert target_args(target) == [
        "-F", "/etc/fab/ssh_config",
        "-l", "deploy",
        "-p", "2222",
        "-i", "/k/one",
        "-i", "/k/two",
        "-o", "ConnectTimeout=7",
        "-o", "ForwardAgent=yes",
        "-o", "Compression=yes",
    ]  # fmt: skip


def test_master_argv_backgrounds_a_persisting_master() -> None:
    argv = master_argv(
        "ssh", SshTarget("web1", user="u"), "/run/fm/abc", "600", ["ServerAliveInterval=15"]
    )
    assert argv[:4] == ["ssh", "-M", "-N", "-f"]
    assert "ControlMaster=yes" in argv
    assert "ControlPath=/run/fm/abc" in argv
    assert "ControlPersist=600" in argv
    assert "ServerAliveInterval=15" in argv
    assert argv[-4:] == ["-l", "u", "--", "web1"]
    assert "-q" not in argv  # the master's stderr is the user's only clue


def test_control_path_percent_and_space_are_escaped() -> None:
    argv = master_argv("ssh", SshTarget("h"), "/tmp/a b%c/x", "600")
    assert 'ControlPath="/tmp/a b%%c/x"' in argv


def test_a_single_quote_is_quoted_as_a_space_is() -> None:
    # From 8.7 ssh's option parser takes a bare ' as the start of a quoted word.
    assert quote_option_value("/tmp/it's") == '"/tmp/it\'s"'
    assert quote_option_value("/tmp/plain") == "/tmp/plain"


def test_double_quote_in_an_option_is_refused() -> None:
    with pytest.raises(ValueError, match="double quote"):
        quote_option_value('/tmp/a"b')


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (600, "600"),
        ("600", "600"),
        ("10m", "10m"),
        (0, "1"),
        (False, "1"),
        ("no", "1"),
        (None, "1"),
        (True, "yes"),
        ("yes", "yes"),
    ],
)
def test_persist_values(given: object, expected: str) -> None:
    assert persist_value(given) == expected


def name(resolved: str, alias: str = "web1", environ: dict[str, str] | None = None) -> str:
    return control_socket_name(master_identity(resolved, alias, environ or {}))


@pytest.fixture(scope="module")
def real_view() -> str:
    """What OpenSSH itself prints for a plain host: every keyword it knows."""
    argv = ["ssh", "-G", "-F", "/dev/null", "-o", "ProxyCommand=nc %h %p", "web1"]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def test_every_keyword_but_the_listed_ones_decides_the_master(real_view: str) -> None:
    base = name(real_view)
    assert len(base) == 20
    keywords = {line.split(" ", 1)[0] for line in real_view.splitlines()}
    # Host keys, authentication, crypto, forwarding: all of them are there.
    assert {"stricthostkeychecking", "userknownhostsfile", "kexalgorithms"} <= keywords
    assert {"forwardagent", "pubkeyauthentication", "proxycommand"} <= keywords
    for keyword in keywords - {"host"}:
        changed = "\n".join(
            f"{line} changed" if line.split(" ", 1)[0] == keyword else line
            for line in real_view.splitlines()
        )
        assert (name(changed) == base) is (keyword in NOT_IDENTITY), keyword


def test_aliases_share_a_master_unless_a_value_names_the_alias(real_view: str) -> None:
    assert name(real_view, "web1") == name(real_view.replace("host web1", "host www"), "www")
    with_alias = real_view.replace("proxycommand nc %h %p", "proxycommand nc %n %p")
    assert name(with_alias, "web1") != name(with_alias, "www")
    escaped = real_view.replace("proxycommand nc %h %p", "proxycommand echo %%n")
    assert name(escaped, "web1") == name(escaped, "www")
    # %k is HostKeyAlias, else the alias: an identity file per alias.
    per_alias_key = real_view + "identityfile ~/.ssh/id_%k\n"
    assert name(per_alias_key, "web1") != name(per_alias_key, "www")


def test_a_forwarded_agent_counts_with_its_socket() -> None:
    forwarded = "user u\nhostname h\nforwardagent yes\n"
    one, other = {"SSH_AUTH_SOCK": "/tmp/a"}, {"SSH_AUTH_SOCK": "/tmp/b"}
    assert name(forwarded, environ=one) != name(forwarded, environ=other)
    kept = "user u\nhostname h\nforwardagent no\n"
    assert name(kept, environ=one) == name(kept, environ=other)
    named = "user u\nhostname h\nidentityagent $MY_AGENT\n"
    assert name(named, environ={"MY_AGENT": "/a"}) != name(named, environ={"MY_AGENT": "/b"})


def test_identities_count_in_their_order() -> None:
    one = "user u\nhostname h\nidentityfile ~/.ssh/a\nidentityfile ~/.ssh/b\n"
    other = "user u\nhostname h\nidentityfile ~/.ssh/b\nidentityfile ~/.ssh/a\n"
    assert name(one) != name(other)


def test_environment_references_count_with_their_values() -> None:
    view = "user u\nuserknownhostsfile ${KH}/known_hosts\n"
    assert name(view, environ={"KH": "/a"}) != name(view, environ={"KH": "/b"})
    assert name(view, environ={"KH": "/a", "OTHER": "1"}) == name(view, environ={"KH": "/a"})


@pytest.mark.parametrize("keyword", ["proxycommand", "knownhostscommand"])
def test_a_command_run_through_a_shell_counts_its_variables_and_is_this_runs_if_it_runs_more(
    keyword: str,
) -> None:
    """The shell that ssh runs these commands with expands ``$NAME`` too; what
    ``$(...)``, backquotes or ``$$`` give, nobody knows ahead."""
    view = f"user u\nhostname h\n{keyword} ssh -W %h:%p $BASTION\n"
    assert name(view, environ={"BASTION": "stage"}) != name(view, environ={"BASTION": "prod"})
    assert name(view, environ={"BASTION": "a", "X": "1"}) == name(view, environ={"BASTION": "a"})
    assert not this_run_only(master_identity(view, "h", {}))
    for words in (
        "$(cat /etc/bastion)",
        "`cat /etc/bastion`",
        "bastion-$$",
        "eval \\${$N}",
        '"$(printf x)"',
        'sh -c "nc \\${$N} 22"',
        "${!N}",
    ):
        ran = view.replace("$BASTION", words)
        identity = master_identity(ran, "h", {})
        assert this_run_only(identity) and THIS_RUN_ONLY in identity.splitlines()
    # eval as a word of the shell only, not inside a name.
    for host in ("eval-bastion", "bastion.eval.example"):
        assert not this_run_only(master_identity(view.replace("$BASTION", host), "h", {}))
    assert this_run_only(master_identity(view.replace("$BASTION", "x; eval y"), "h", {}))
    # Another keyword's $ is ssh's own business, or none.
    assert not this_run_only(master_identity("user u\nlocalcommand echo $(date)\n", "h", {}))


TOKENS = {"d": "/home/me", "h": "10.0.0.5", "r": "deploy", "n": "web1", "u": "me"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("~/.ssh/id_ed25519", "/home/me/.ssh/id_ed25519"),
        ("~", "/home/me"),
        ("/keys/%r@%h", "/keys/deploy@10.0.0.5"),
        ("/keys/%n-%%h", "/keys/web1-%h"),
        ("${KEYS}/id", "/k/id"),
        ("~other/id", None),  # another account's home: not ours to guess
        ("/keys/%Z", None),  # a token ssh would expand to something unknown here
        ("${UNSET}/id", None),
    ],
)
def test_paths_expand_as_ssh_expands_them(value: str, expected: str | None) -> None:
    assert expand_path(value, TOKENS, {"KEYS": "/k"}) == expected


def test_the_socket_path_limit_follows_the_system() -> None:
    assert max_control_path("linux") == 90
    assert max_control_path("darwin") == 86  # sockaddr_un holds 104 bytes there
    assert max_control_path("freebsd14") == 86


def test_the_default_folder_on_a_mac_fits_its_shorter_limit() -> None:
    # ~/.ssh/fabric-mux, not $TMPDIR (/var/folders/xx/.../T/, about 50 bytes).
    path = "/Users/firstname.lastname/.ssh/fabric-mux/" + name(RESOLVED)
    assert len(path) <= max_control_path("darwin")


def test_socket_path_fits_the_limit_for_a_typical_runtime_dir() -> None:
    path = "/run/user/1000/fabric-mux/" + name(RESOLVED)
    assert len(path) <= MAX_CONTROL_PATH


def test_parse_resolved_config_keeps_first_value() -> None:
    parsed = parse_resolved_config("identityfile a\nidentityfile b\nUser x\n")
    assert parsed == {"identityfile": "a", "user": "x"}


def test_parse_resolved_config_is_read_only_and_parsed_once_a_text() -> None:
    # A route, its master and its socket's name all read one answer: a change
    # made by one reader would reach the others.
    parsed = parse_resolved_config(RESOLVED)
    assert parse_resolved_config(RESOLVED) is parsed
    with pytest.raises(TypeError):
        parsed["connecttimeout"] = "30"  # type: ignore[index]


def test_fallbacks_respect_the_users_connect_timeout() -> None:
    resolved = parse_resolved_config(RESOLVED)
    assert fallback_options(resolved, (15, 3), 10) == [
        "ServerAliveInterval=15",
        "ServerAliveCountMax=3",
        "ConnectTimeout=10",
    ]
    assert fallback_options({**resolved, "connecttimeout": "30"}, None, 10) == []


def test_ssh_options_accepts_a_string_or_a_list() -> None:
    assert ssh_options(None) == ()
    assert ssh_options("Compression=yes") == ("Compression=yes",)
    # Text is one option a line (FABRIC_MUX_SSH_OPTIONS), a value's spaces kept.
    assert ssh_options("A=1\r\n\n ProxyCommand=nc %h %p \n") == ("A=1", "ProxyCommand=nc %h %p")
    assert ssh_options(["A=1", "B=2"]) == ("A=1", "B=2")


def test_connect_kwargs_become_options() -> None:
    given = {"allow_agent": False, "compress": True, "gss_auth": True, "key_filename": ["k"]}
    assert connect_kwargs_options(given) == (
        "IdentityAgent=none",
        "Compression=yes",
        "GSSAPIAuthentication=yes",
    )
    assert connect_kwargs_options({"allow_agent": True, "look_for_keys": True}) == ()


def test_paramiko_only_connect_kwargs_are_refused() -> None:
    with pytest.raises(ValueError, match="pkey"):
        connect_kwargs_options({"pkey": object()})
