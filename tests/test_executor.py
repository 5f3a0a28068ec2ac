"""Unit tests of the fab wiring: which connection class a task gets, and cleanup."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fabric import Config, Connection, Task
from invoke.exceptions import Exit
from invoke.tasks import Call
from pytest_mock import MockerFixture

from fabric_mux import MuxConnection, MuxExecutor
from fabric_mux import executor as executor_module
from fabric_mux.exceptions import BadHostList
from fabric_mux.executor import MuxConnectionCall, _hosts_in, _Run, _waves


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
    assert _hosts_in(str(listing)) == ["web1", "web2"]


def test_a_host_file_that_is_not_utf8_is_one_clear_line(tmp_path: Path) -> None:
    listing = tmp_path / "hosts.txt"
    listing.write_bytes(b"web1\nm\xfcnchen\n")  # Latin-1
    with pytest.raises(Exit) as raised:
        _hosts_in(str(listing))
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
        _hosts_in(str(listing))
    name = f"web1{stray}web2"
    assert raised.value.message == (
        f"fabric-mux: {listing}, line 2: the host name {name!r} holds a control "
        f"character ({stray!r}): no host's name does"
    )


def test_a_host_file_line_with_a_unicode_line_separator_is_one_host(tmp_path: Path) -> None:
    listing = tmp_path / "hosts.txt"
    listing.write_text("web1\u2028web2\n", encoding="utf-8")
    # Not a line break here: one name, which reaches ssh as it is (and is shown escaped).
    assert _hosts_in(str(listing)) == ["web1\u2028web2"]
