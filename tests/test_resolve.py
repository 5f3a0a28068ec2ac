"""OpenSSH's view of a connection is asked again whenever it may have changed."""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from waiting import wait_until

from fabric_mux import resolve
from fabric_mux.argv import SshTarget
from fabric_mux.exceptions import BadSshOption


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


def test_a_file_copied_in_with_an_old_time_is_a_change_since(config: Path) -> None:
    """``cp -p`` gives a file its source's old modification time; its change
    time is now."""
    long_ago = (1_577_836_800, 1_577_836_800)  # 2020
    os.utime(config.parent, long_ago)
    started = time.time() - 0.5  # a master started just before the copy
    config.write_text("Host web\n    HostName 10.0.0.6\n")  # cp -p: into the file,
    os.utime(config, long_ago)  # then its source's times: its change time is now
    os.utime(config.parent, long_ago)
    assert os.stat(config).st_mtime < started
    assert "hostname 10.0.0.6" in view(config)
    assert resolve.changed_since("ssh", SshTarget("web", config_file=str(config)), started)


def test_a_socket_beside_the_config_is_no_change_since(config: Path) -> None:
    """The user's ControlPath sockets live beside ``~/.ssh/config``: a new one
    changes the folder, not the config."""
    started = config.stat().st_ctime + 0.5  # a master started after the last edit
    folder = config.parent
    later = started + 60
    (folder / "cm-another-host").write_text("")  # a socket of the user's, later that day
    os.utime(folder, (later, later))
    view(config)  # asked now, as a route asks it before it looks at the master
    target = SshTarget("web", config_file=str(config))
    assert resolve.changed_since("ssh", target, started) is False
    config.write_text("Host web\n    HostName 10.0.0.7\n")  # an edit later that day
    os.utime(config, (later, later))
    view(config)
    assert resolve.changed_since("ssh", target, started) is True


def a_moment_between(folder: Path) -> float:
    """A time after every file time in ``folder``'s file system so far, and before
    any to come (file times come from a coarse clock: one tick holds many). The
    probe it takes the clock's time from is beside ``folder``, not in it."""
    probe = folder.with_name(folder.name + ".tick")
    probe.write_text("")
    before = probe.stat().st_ctime_ns

    def ticked() -> bool:
        probe.write_text("x")
        return probe.stat().st_ctime_ns > before

    assert wait_until(ticked)
    after = probe.stat().st_ctime_ns
    probe.unlink()
    return (before + after) / 2 / 1e9


@pytest.mark.parametrize("switched", ["a linked file", "a linked folder", "a file removed"])
def test_an_include_switched_or_thinned_since_is_a_change_since(
    config: Path, tmp_path: Path, switched: str
) -> None:
    """What a master read may be gone from what ssh reads now without any file read
    now being new: a link re-pointed to an older file or folder, a file an
    ``Include`` pattern took removed."""
    old, new = tmp_path / "site-a", tmp_path / "site-b"
    for folder, address in ((old, "10.0.0.5"), (new, "10.0.0.6")):
        folder.mkdir()
        (folder / "web.conf").write_text(f"Host web\n    HostName {address}\n")
    link = tmp_path / "current"
    if switched == "a linked file":
        link.symlink_to(old / "web.conf")
        include = f"Include {link}"
    elif switched == "a linked folder":
        link.symlink_to(old)
        include = f"Include {link}/*.conf"
    else:
        (old / "00-first.conf").write_text("Host web\n    HostName 10.0.0.4\n")
        include = f"Include {old}/*.conf"
    config.write_text(f"{include}\nHost web\n    HostName 10.0.0.9\n")
    target = SshTarget("web", config_file=str(config))
    started = a_moment_between(tmp_path)  # the master started, and read all that
    view(config)
    assert resolve.changed_since("ssh", target, started) is False
    if switched == "a file removed":
        (old / "00-first.conf").unlink()
    else:
        relinked = tmp_path / "relinked"
        relinked.symlink_to(new / "web.conf" if switched == "a linked file" else new)
        os.replace(relinked, link)
    now = "hostname 10.0.0.5" if switched == "a file removed" else "hostname 10.0.0.6"
    assert now in view(config)  # not what the master read
    assert resolve.changed_since("ssh", target, started) is True


def site(folder: Path, address: str, name: str = "web.conf") -> None:
    folder.mkdir(parents=True)
    (folder / name).write_text(f"Host web\n    HostName {address}\n")


def read_then_changed(
    config: Path, tmp_path: Path, include: str, change: Callable[[], None]
) -> bool:
    """``changed_since`` the moment a master read ``include`` (its answer
    ``10.0.0.5``), once ``change()`` has made ssh answer otherwise."""
    config.write_text(f"{include}\nHost web\n    HostName 10.0.0.9\n")
    target = SshTarget("web", config_file=str(config))
    started = a_moment_between(tmp_path)
    assert "hostname 10.0.0.5" in view(config)
    assert resolve.changed_since("ssh", target, started) is False
    change()
    assert "hostname 10.0.0.5" not in view(config)
    return resolve.changed_since("ssh", target, started) is True


@pytest.mark.parametrize("pattern", ["web.conf", "*.conf"])
def test_an_included_folder_removed_is_a_change_since(
    config: Path, tmp_path: Path, pattern: str
) -> None:
    """Its folder is gone: the one that held it changed."""
    site(tmp_path / "inc", "10.0.0.5")
    include = f"Include {tmp_path}/inc/{pattern}"
    assert read_then_changed(config, tmp_path, include, lambda: shutil.rmtree(tmp_path / "inc"))


@pytest.mark.parametrize("way", ["a link to a link", "a link then .."])
def test_a_link_met_on_the_way_is_seen_where_the_kernel_meets_it(
    config: Path, tmp_path: Path, way: str
) -> None:
    """``current.conf -> sel/sub/web.conf`` with ``sel`` re-pointed (a generation
    link of dotfiles), and ``sel/../conf.d``: links that are not in the path as
    written."""
    sel = tmp_path / "sel"
    if way == "a link to a link":
        site(tmp_path / "siteA" / "sub", "10.0.0.5")
        site(tmp_path / "siteB" / "sub", "10.0.0.6")
        sel.symlink_to(tmp_path / "siteA")
        (tmp_path / "current.conf").symlink_to(sel / "sub" / "web.conf")
        include, to = f"Include {tmp_path}/current.conf", tmp_path / "siteB"
    else:
        site(tmp_path / "siteA" / "conf.d", "10.0.0.5")
        site(tmp_path / "siteB" / "conf.d", "10.0.0.6")
        (tmp_path / "siteA" / "sub").mkdir()
        (tmp_path / "siteB" / "sub").mkdir()
        sel.symlink_to(tmp_path / "siteA" / "sub")
        include, to = f"Include {sel}/../conf.d/*.conf", tmp_path / "siteB" / "sub"

    def repoint() -> None:
        (tmp_path / "relinked").symlink_to(to)
        os.replace(tmp_path / "relinked", sel)

    assert read_then_changed(config, tmp_path, include, repoint)


def test_a_hash_inside_an_include_pattern_is_no_comment(config: Path, tmp_path: Path) -> None:
    """ssh reads ``#`` as a comment only where it begins a word."""
    folder = tmp_path / "a#b"
    site(folder, "10.0.0.5", "00.conf")
    (folder / "01.conf").write_text("Host web\n    HostName 10.0.0.6\n")
    include = f"Include {folder}/*.conf  # the site's hosts"
    assert read_then_changed(config, tmp_path, include, (folder / "00.conf").unlink)


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


def test_a_fleets_config_is_read_once_for_what_decides_keeping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every host's answer is kept; the file naming them all is read for its
    # variables and its Match tests once a version, not once a host.
    config = tmp_path / "ssh_config"
    config.write_text("".join(f"Host h{n}\n    HostName 10.0.0.{n}\n" for n in range(1, 9)))
    folder = tmp_path / "control"
    folder.mkdir(mode=0o700)
    reads: list[str] = []
    read_text = resolve._read_text

    def counting(path: str) -> str | None:
        reads.append(path)
        return read_text(path)

    monkeypatch.setattr(resolve, "_read_text", counting)
    for n in range(1, 9):
        target = SshTarget(f"h{n}", config_file=str(config))
        assert f"hostname 10.0.0.{n}" in resolve.resolve_config("ssh", target, keep_in=folder)
    assert len(list((folder / resolve.KEPT).iterdir())) == 8
    assert reads.count(str(config)) == 1


@pytest.mark.parametrize(
    ("line", "said"),
    [("Bogus yes", "Bad configuration option: bogus"), ("Port 99999", "line 2: Bad")],
)
def test_a_refused_config_is_said_in_sshs_words_alone(config: Path, line: str, said: str) -> None:
    config.write_text(f"Host web\n    {line}\n")
    with pytest.raises(BadSshOption) as raised:
        view(config)
    assert said in str(raised.value)
    # Not the debug lines nor the version line that -v adds on some builds.
    assert "OpenSSH_" not in str(raised.value)
    assert "debug1:" not in str(raised.value)
