"""What fabric-mux relies on in invoke and fabric: the private names are still there
(see upstream.py), and the public paths still reach what fabric-mux plugs in."""

from __future__ import annotations

import importlib
from typing import Any

import fabric
import pytest
from fabric import SerialGroup
from fabric.group import GroupResult
from invoke.collection import Collection
from invoke.context import Context
from invoke.runners import Runner

from fabric_mux.config import MuxConfig, load_environment, mux_settings
from fabric_mux.executor import MuxExecutor
from fabric_mux.main import MuxFab
from fabric_mux.upstream import INSTANCE_ATTRIBUTES, RELIED_ON


@pytest.mark.parametrize(("module", "cls", "name", "why"), RELIED_ON, ids=str)
def test_each_private_name_relied_on_still_exists(
    module: str, cls: str, name: str, why: str
) -> None:
    owner = getattr(importlib.import_module(module), cls)
    if name in INSTANCE_ATTRIBUTES:
        instance = Runner(Context()) if cls == "Runner" else fabric.Config()
        found = hasattr(instance, name)
    else:
        found = hasattr(owner, name)
    assert found, f"{module}.{cls}.{name} is gone; fabric-mux uses it to {why}"


# -- the behaviour relied on, not only the names -------------------------------------------
#
# Each test drives fabric or invoke through its public entry point and checks that it
# still reaches what fabric-mux plugs in where it plugs it in: a new release that
# calls it otherwise fails here, by name, rather than in a user's run.


class _Recording(Runner):
    """An invoke runner that records what invoke asks of it (MuxRemote's contract)."""

    def __init__(self, context: Context) -> None:
        super().__init__(context)
        self.calls: list[tuple[Any, ...]] = []

    def start(self, command: str, shell: str, env: dict[str, Any], timeout: Any = None) -> None:
        self.calls.append(("start", command, shell, dict(env)))

    @property
    def process_is_finished(self) -> bool:
        return True

    def returncode(self) -> int:
        return 3

    def read_proc_stdout(self, num_bytes: int) -> bytes:
        return b""

    def read_proc_stderr(self, num_bytes: int) -> bytes:
        return b""

    def _write_proc_stdin(self, data: bytes) -> None:
        self.calls.append(("stdin", data))

    def close_proc_stdin(self) -> None:
        self.calls.append(("close stdin",))

    def kill(self) -> None:
        self.calls.append(("kill",))

    def send_interrupt(self, interrupt: KeyboardInterrupt) -> None:
        self.calls.append(("interrupt",))


def test_invoke_runs_a_command_through_the_runner_calls_mux_remote_implements() -> None:
    runner = _Recording(Context())
    result = runner.run("echo hi", hide=True, warn=True, in_stream=False, env={"A": "1"})
    start = next(call for call in runner.calls if call[0] == "start")
    assert start[1] == "echo hi" and start[3].get("A") == "1"
    assert result is not None and (result.exited, result.command) == (3, "echo hi")


def test_fab_hands_a_task_a_mux_connection_a_host() -> None:
    """fab's program, through MuxExecutor, calls make_context as invoke calls it
    (invoke 3 adds arguments) and gives the task its host's MuxConnection."""
    seen: list[tuple[str, str]] = []

    def where(c: Any) -> None:
        seen.append((type(c).__name__, c.original_host))

    program = MuxFab(
        namespace=Collection(fabric.task(where)),
        executor_class=MuxExecutor,
        config_class=MuxConfig,
    )
    program.run(["fabmux", "-H", "web1", "where"], exit=False)
    assert seen == [("MuxConnection", "web1")]


def test_a_group_call_goes_through_do_which_opens_the_masters_first() -> None:
    """fabric's Group runs run/sudo/put/get through ``_do``, where MuxGroup opens
    every member's master at once."""
    called: list[str] = []

    class Spy(SerialGroup):  # type: ignore[misc]
        def _do(self, method: str, *args: Any, **kwargs: Any) -> Any:
            called.append(method)
            return GroupResult()

    group = Spy()
    group.run("true")
    group.sudo("true")
    group.put("x")
    group.get("x")
    assert called == ["run", "sudo", "put", "get"]


def test_invoke_reads_the_environment_through_the_loader_fabric_mux_gives_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FABRIC_MUX_PERSIST", "10m")
    monkeypatch.setenv("FABRIC_MUX_ENABLED", "false")
    for config in (fabric.Config(), MuxConfig()):
        load_environment(config)
        assert config.mux.persist == "10m" and config.mux.enabled == "false"
        assert mux_settings(config).enabled is False
