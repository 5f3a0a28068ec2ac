"""Unit tests of the fab wiring: which connection class a task gets, and cleanup."""

from __future__ import annotations

import os
import pwd
from pathlib import Path
from typing import Any

import pytest
from fabric import Config, Connection, Task
from invoke.exceptions import Exit
from invoke.tasks import Call
from pytest_mock import MockerFixture

from fabric_mux import MuxConnection, MuxExecutor
from fabric_mux import executor as executor_module
from fabric_mux.exceptions import BadHostList, HostListUnsafe
from fabric_mux.executor import MuxConnectionCall, _Run, _waves
from fabric_mux.hostfiles import hosts_in


def noop(c: Any) -> None:
    pass


def make_call(run: _Run) -> MuxConnectionCall:
    return MuxConnectionCall(task=Task(noop), init_kwargs={"host": "web1"}, run_state=run)


def test_parameterize_makes_mux_calls_and_learns_the_hosts() -> None:
    executor = MuxExecutor(collection=None, config=Config())
    call = executor.parameterize(Call(task=Task(noop)), {"host": "web1"})
    executor.parameterize(Call(task=Task(noop)), {"host": "web2"})
    executor.parameterize(Call(task=Task(noop)), {"host": "web1"})  # a second task, same host
    assert isinstance(call, MuxConnectionCall)
    assert call.run_state is executor.run_state
    copy = call.clone()  # invoke clones calls, e.g. for pre/post tasks
    assert copy.run_state is executor.run_state
    assert copy.init_kwargs == {"host": "web1"}
    assert [kw["host"] for kw in executor.run_state.hosts.values()] == ["web1", "web2"]


def test_task_gets_a_mux_connection_and_it_is_recorded() -> None:
    run = _Run()
    connection = make_call(run).make_context(Config())
    assert isinstance(connection, MuxConnection)
    assert connection.original_host == "web1"
    assert run.opened == [connection]


def test_mux_disabled_gives_plain_fabric() -> None:
    connection = make_call(_Run()).make_context(Config(overrides={"mux": {"enabled": False}}))
    assert type(connection) is Connection


def test_invoke_3_call_signature_is_accepted() -> None:
    connection = make_call(_Run()).make_context(Config(), core_parse_result=object())
    assert isinstance(connection, MuxConnection)


def test_a_host_whose_master_failed_raises_that_failure(mocker: MockerFixture) -> None:
    run = _Run()
    failure = RuntimeError("host key verification failed")
    run.failures[repr(sorted({"host": "web1"}.items()))] = failure
    run._started = True
    connection = make_call(run).make_context(Config())
    try:
        connection.run("true")
    except RuntimeError as exc:
        assert exc is failure
    else:
        raise AssertionError("the remembered failure was not raised")


def test_execute_closes_what_the_run_opened(mocker: MockerFixture) -> None:
    executor = MuxExecutor(collection=None, config=Config())
    first, second = mocker.Mock(), mocker.Mock()
    executor.run_state.opened.extend([first, second])
    mocker.patch("fabric.Executor.execute", side_effect=RuntimeError("task failed"))
    try:
        executor.execute("deploy")
    except RuntimeError:
        pass
    first.close.assert_called_once_with()
    second.close.assert_called_once_with()
    assert executor.run_state.opened == []


def test_grouping_hosts_into_waves_names_each_host_once(mocker: MockerFixture) -> None:
    run = _Run()
    task, other = Task(noop), Task(noop)
    calls = [
        MuxConnectionCall(task=t, init_kwargs={"host": f"h{n}"}, run_state=run)
        for t in (task, other)
        for n in range(2000)
    ]
    calls.append(MuxConnectionCall(task=other, init_kwargs={"host": "h0"}, run_state=run))
    labels = mocker.spy(executor_module, "_label")
    waves = _waves(calls)
    assert [len(wave) for wave in waves] == [2000, 2000, 1]  # h0 again: a wave of its own
    # Linear: each call's host is named once (it was once for every call before it).
    assert labels.call_count == len(calls)


def test_a_host_file_with_a_byte_order_mark_reads_as_its_hosts(tmp_path: Path) -> None:
    listing = tmp_path / "hosts.txt"
    listing.write_bytes(b"\xef\xbb\xbfweb1\r\n# a comment\r\nweb2 # the second\r\n\r\n")
    assert hosts_in(str(listing)) == ["web1", "web2"]


def test_a_host_file_that_is_not_utf8_is_one_clear_line(tmp_path: Path) -> None:
    listing = tmp_path / "hosts.txt"
    listing.write_bytes(b"web1\nm\xfcnchen\n")  # Latin-1
    with pytest.raises(Exit) as raised:
        hosts_in(str(listing))
    assert raised.value.message == (
        f"fabric-mux: the host list {listing} is not UTF-8 text (line 2, byte 0xfc): "
        "save it as UTF-8"
    )
    assert raised.value.code == 1


@pytest.mark.parametrize("stray", ["\r", "\x0b", "\x0c", "\x85", "\x1b"])
def test_a_host_file_line_ends_at_a_newline_only_and_a_control_character_is_refused(
    tmp_path: Path, stray: str
) -> None:
    # str.splitlines() made two hosts of "web1<stray>web2".
    listing = tmp_path / "hosts.txt"
    listing.write_text(f"web0\r\nweb1{stray}web2\n", encoding="utf-8")
    with pytest.raises(BadHostList) as raised:
        hosts_in(str(listing))
    name = f"web1{stray}web2"
    assert raised.value.message == (
        f"fabric-mux: {listing}, line 2: the host name {name!r} holds a control "
        f"character ({stray!r}): no host's name does"
    )


def test_a_host_file_line_with_a_unicode_line_separator_is_one_host(tmp_path: Path) -> None:
    listing = tmp_path / "hosts.txt"
    listing.write_text("web1\u2028web2\n", encoding="utf-8")
    # Not a line break here: one name, refused whole as one that holds an invisible
    # character (never split into web1 and web2).
    with pytest.raises(BadHostList) as raised:
        hosts_in(str(listing))
    assert str(raised.value) == (
        f"{listing}, line 1: the host name 'web1\\u2028web2' holds an invisible character: "
        "no host's name does"
    )


# -- whose host files are read ----------------------------------------------------------


def refused(listing: Path) -> str:
    with pytest.raises(HostListUnsafe) as raised:
        hosts_in(str(listing))
    assert raised.value.code == 1 and "\n" not in raised.value.message
    return raised.value.message


def test_a_host_file_others_can_write_is_not_read(tmp_path: Path) -> None:
    listing = tmp_path / "hosts.txt"
    listing.write_text("web1\n")
    listing.chmod(0o666)
    assert refused(listing) == (
        f"fabric-mux: the host list {listing} is not safe to read: {listing} has mode 0666: "
        "others can write to it, so another user could choose where this run goes; keep host "
        "lists where only you can write"
    )


def test_a_host_file_in_a_folder_others_can_write_is_not_read(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "hosts.txt").write_text("web1\n")
    shared.chmod(0o777)  # anyone could put another file in its place
    assert f"{shared} has mode 0777: others can write to it" in refused(shared / "hosts.txt")
    shared.chmod(0o1777)  # sticky, as /tmp: nobody else can replace what is ours
    assert hosts_in(str(shared / "hosts.txt")) == ["web1"]


def test_a_host_files_link_is_followed_when_it_and_its_target_are_safe(tmp_path: Path) -> None:
    (tmp_path / "prod.txt").write_text("web1\n")
    (tmp_path / "hosts.txt").symlink_to("prod.txt")
    assert hosts_in(str(tmp_path / "hosts.txt")) == ["web1"]
    (tmp_path / "prod.txt").chmod(0o646)
    assert f"{tmp_path / 'prod.txt'} has mode 0646" in refused(tmp_path / "hosts.txt")


@pytest.fixture
def other_account(sshd_user: str) -> pwd.struct_passwd:
    if os.geteuid() != 0:
        pytest.skip("only root can give a file to another account")
    account = pwd.getpwnam(sshd_user)
    assert account.pw_uid != 0
    return account


def test_a_host_file_or_link_of_another_account_is_not_read(
    tmp_path: Path, other_account: pwd.struct_passwd
) -> None:
    listing = tmp_path / "hosts.txt"
    listing.write_text("web1\n")
    os.chown(listing, other_account.pw_uid, -1)
    who = f"{other_account.pw_name} (uid {other_account.pw_uid})"
    assert f"{listing} belongs to {who}" in refused(listing)
    os.chown(listing, 0, -1)
    link = tmp_path / "link.txt"
    link.symlink_to(listing)
    os.lchown(link, other_account.pw_uid, -1)
    assert f"{link} is a link that {who} owns" in refused(link)


def test_group_write_is_fine_only_in_a_group_of_ones_own(
    tmp_path: Path, other_account: pwd.struct_passwd
) -> None:
    listing = tmp_path / "hosts.txt"
    listing.write_text("web1\n")
    listing.chmod(0o664)
    os.chown(listing, 0, other_account.pw_gid)  # a group another account is in
    assert f"{listing} has mode 0664: others can write to it" in refused(listing)
    os.chown(listing, 0, 0)  # root's own
    assert hosts_in(str(listing)) == ["web1"]
