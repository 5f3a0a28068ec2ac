"""Unit tests of the fab wiring: which connection class a task gets, and cleanup."""

from __future__ import annotations

from typing import Any

from fabric import Config, Connection, Task
from invoke.tasks import Call
from pytest_mock import MockerFixture

from fabric_mux import MuxConnection, MuxExecutor
from fabric_mux.executor import MuxConnectionCall


def noop(c: Any) -> None:
    pass


def make_call(opened: list[Connection]) -> MuxConnectionCall:
    return MuxConnectionCall(task=Task(noop), init_kwargs={"host": "web1"}, opened=opened)


def test_parameterize_makes_mux_calls() -> None:
    executor = MuxExecutor(collection=None, config=Config())
    call = executor.parameterize(Call(task=Task(noop)), {"host": "web1"})
    assert isinstance(call, MuxConnectionCall)
    assert call.opened is executor.opened
    copy = call.clone()  # invoke clones calls, e.g. for pre/post tasks
    assert copy.opened is executor.opened
    assert copy.init_kwargs == {"host": "web1"}


def test_task_gets_a_mux_connection_and_it_is_recorded() -> None:
    opened: list[Connection] = []
    connection = make_call(opened).make_context(Config())
    assert isinstance(connection, MuxConnection)
    assert connection.original_host == "web1"
    assert opened == [connection]


def test_mux_disabled_gives_plain_fabric() -> None:
    connection = make_call([]).make_context(Config(overrides={"mux": {"enabled": False}}))
    assert type(connection) is Connection


def test_invoke_3_call_signature_is_accepted() -> None:
    connection = make_call([]).make_context(Config(), core_parse_result=object())
    assert isinstance(connection, MuxConnection)


def test_execute_closes_what_the_run_opened(mocker: MockerFixture) -> None:
    executor = MuxExecutor(collection=None, config=Config())
    first, second = mocker.Mock(), mocker.Mock()
    executor.opened.extend([first, second])
    mocker.patch("fabric.Executor.execute", side_effect=RuntimeError("task failed"))
    try:
        executor.execute("deploy")
    except RuntimeError:
        pass
    first.close.assert_called_once_with()
    second.close.assert_called_once_with()
    assert executor.opened == []
