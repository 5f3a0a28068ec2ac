"""``MuxExecutor``: stock ``fab`` hands every task a ``MuxConnection``.

Before the first task runs, the masters of every host of the run start
together (as many at once as :mod:`~fabric_mux.warmup` allows; a bastion logs
in once for the hosts behind it), so a cold run over many hosts pays for about
one login's time. Then the tasks run as ``fab`` always runs them. In a
parallel run (``-P``) each host starts its own master as its task begins,
and its task goes on as soon as that master is up.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from fabric import Connection, Executor
from fabric.tasks import ConnectionCall
from invoke.exceptions import Exit

from .config import load_environment, mux_settings
from .connection import MuxConnection
from .exceptions import BadHostList, EmptyHostList, RunInterrupted
from .hostfiles import hosts_in
from .hostlist import expand, names_no_host, split_hosts
from .parallel import Terminated
from .screen import visible
from .upstream import call_context, host_config

if TYPE_CHECKING:
    from .warmup import Starter

__all__ = ["MuxConnectionCall", "MuxExecutor"]


def _key(init_kwargs: dict[str, Any]) -> str:
    """One host of the run, as ``fab`` names it (``-H user@host:port`` or a task's hosts)."""
    return repr(sorted(init_kwargs.items()))


class _Run:
    """What the calls of one ``fab`` run share: the hosts, the failed starts, the
    connections to close at the end."""

    def __init__(self) -> None:
        self.hosts: dict[str, dict[str, Any]] = {}
        self.failures: dict[str, BaseException] = {}
        self.opened: list[Connection] = []
        #: The hosts (as the run names them) whose task got its connection, up:
        #: only there can a command have started.
        self.reached: set[str] = set()
        #: Set by Ctrl-C in a parallel run: every connection refuses its next step.
        self.interrupted: RunInterrupted | None = None
        self._started = False
        self._lock = threading.Lock()
        self._starter: Starter | None = None

    def interrupt(self) -> None:
        """Stop the run's tasks where they stand: each connection of the run,
        now or made later, fails its next command (its sessions end now)."""
        self.interrupted = RunInterrupted(
            "interrupted (Ctrl-C): the run stopped before this host's next command"
        )
        for connection in list(self.opened):
            if isinstance(connection, MuxConnection):
                connection.remember_failure(self.interrupted)
            connection.close()
        if self._starter is not None:
            # Starts under way are ended, and masters they bring up anyway stopped.
            from .warmup import unwind_starts

            unwind_starts(self._starter)

    def check_interrupted(self) -> None:
        if self.interrupted is not None:
            raise self.interrupted

    def start_masters(self, config: Any) -> None:
        """Open every host's master at once, the first time a task needs a connection."""
        with self._lock:
            if self._started:
                return
            self._started = True
            settings = mux_settings(config)
            if not settings.enabled or len(self.hosts) < 2:
                return  # one host: its task opens it
            connections = {}
            for key, kw in self.hosts.items():
                try:
                    connections[key] = MuxConnection(**kw, config=config)
                except Exception as exc:  # a malformed host is its own failure
                    self.failures[key] = exc
            # Kept open to the end of the run: a master that persists for 0
            # seconds lives while held.
            self.opened.extend(connections.values())
            from .warmup import open_masters  # a run over one host needs none of it

            failed = open_masters(connections.values(), settings.masters_at_once)
            for key, connection in connections.items():
                if connection in failed:
                    self.failures[key] = failed[connection]

    def starter(self, config: Any) -> Starter:
        """What starts the masters of a parallel run, each as its host's task begins."""
        with self._lock:
            if self._starter is None:
                from .warmup import Starter

                self._starter = Starter(mux_settings(config).masters_at_once)
            return self._starter


class MuxConnectionCall(ConnectionCall):  # type: ignore[misc]
    """A task call whose context is a ``MuxConnection`` (or a plain one when mux is off)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        #: The run this call belongs to.
        self.run_state: _Run = kwargs.pop("run_state")
        super().__init__(*args, **kwargs)

    def clone_data(self) -> dict[str, Any]:
        # invoke clones calls through clone_data (fabric's clone_kwargs is not
        # called): carry our fields, and the host, into the copy.
        data: dict[str, Any] = super().clone_data()
        data.update(init_kwargs=self.init_kwargs, run_state=self.run_state)
        return data

    # invoke 3 adds arguments (core_parse_result=...): accept whatever comes.
    def make_context(self, config: Any, *args: Any, **kwargs: Any) -> Connection:
        run = self.run_state
        run.check_interrupted()
        settings = mux_settings(config)
        if not settings.enabled:
            connection = Connection(**dict(self.init_kwargs, config=config))
        elif settings.parallel or settings.serial:
            # This host's master starts now (or is found up, started ahead of
            # its batch), and its task goes on as soon as it is: no host waits
            # for another's login.
            connection = MuxConnection(**dict(self.init_kwargs, config=config))
            run.opened.append(connection)
            failure = run.failures.get(_key(self.init_kwargs))
            if failure is not None:  # its start ahead failed: no second login
                connection.remember_failure(failure)
                raise failure
            run.starter(config).open(connection)
            run.check_interrupted()
            run.reached.add(_label(self.init_kwargs))
            return connection
        else:
            run.start_masters(config)
            run.check_interrupted()  # Ctrl-C while the masters started
            failure = run.failures.get(_key(self.init_kwargs))
            connection = MuxConnection(**dict(self.init_kwargs, config=config))
            if failure is not None:
                connection.remember_failure(failure)
        run.opened.append(connection)
        if run.interrupted is not None and isinstance(connection, MuxConnection):
            connection.remember_failure(run.interrupted)  # made as Ctrl-C came
        return connection


class MuxExecutor(Executor):  # type: ignore[misc]
    """Fabric's executor, giving tasks ``MuxConnection`` objects.

    Enable it for stock ``fab`` in ``fabric.yaml``::

        tasks:
          executor_class: fabric_mux.MuxExecutor

    Connections a run opened are closed when it ends; persisting masters
    stay up for the next run.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.run_state = _Run()

    def parameterize(self, call: Any, connection_init_kwargs: dict[str, Any]) -> Any:
        self.run_state.hosts.setdefault(_key(connection_init_kwargs), connection_init_kwargs)
        new_kwargs = dict(init_kwargs=connection_init_kwargs, run_state=self.run_state)
        return call.clone(into=MuxConnectionCall, with_=new_kwargs)

    def expand_calls(self, calls: Any, apply_hosts: bool = True) -> Any:
        """Fabric's, with a run on no host refused: an ``-H`` that names none (see
        :func:`_named_hosts`), a task whose own ``hosts`` is an empty list, a
        command (``-- cmd``) with no ``-H``. A task with no ``hosts`` at all
        (None) stays a task of this machine, as in Fabric."""
        named = False
        if apply_hosts:
            hosts = self.core[0].args.hosts
            if hosts.value is not None:
                # Fabric splits this text again: it gets the names without the blanks.
                hosts.value = ",".join(_named_hosts(hosts.value))
                named = True
            if self.core.remainder and not named:
                raise EmptyHostList(
                    f"a command to run (-- {self.core.remainder}) needs hosts: name them with -H"
                )
        if not named:
            for call in calls:
                _check_own_hosts(call)
        return super().expand_calls(calls, apply_hosts)

    def normalize_hosts(self, hosts: Any) -> list[dict[str, Any]]:
        """Fabric's, plus ``@FILE`` for the hosts listed in FILE (one a line; # comments),
        and host ranges (``web[01-40]``) anywhere.

        A blank host name (from a task's ``hosts=[...]``: ``-H``'s blanks are
        gone by now) is refused, as ssh would be asked to reach no host.
        """
        expanded: list[Any] = []
        files: list[str] = []
        for value in hosts or []:
            if isinstance(value, str) and value.startswith("@"):
                files.append(value[1:])
                expanded.extend(hosts_in(value[1:]))
            elif _names_no_host(value):
                shown = "a blank host name" if _blank(value) else f"{value!r}, which names no host,"
                raise EmptyHostList(
                    f"{shown} among the task's hosts ({list(hosts)!r}): nothing to run on there"
                )
            elif isinstance(value, str):
                expanded.extend(expand(value.strip()))
            elif isinstance(value, dict) and isinstance(value.get("host"), str):
                expanded.extend(dict(value, host=host) for host in expand(value["host"]))
            else:
                expanded.append(value)
        for value in expanded:  # a host file's lines
            if _names_no_host(value):
                raise EmptyHostList(
                    f"{value!r} in {', '.join(files) or 'the hosts'} names no host: "
                    "nothing to run on there"
                )
        if files and not expanded:
            # Fabric runs a task with no host on this machine: never what a
            # host list that came out empty meant.
            raise EmptyHostList(
                f"no hosts in {', '.join(files)} (only blank lines and comments): nothing to run on"
            )
        if hosts is not None and not expanded:
            raise EmptyHostList(f"a task's hosts ({hosts!r}) name no host: nothing to run on")
        normalized: list[dict[str, Any]] = super().normalize_hosts(expanded)
        return normalized

    def execute(self, *tasks: Any) -> Any:
        # invoke reads the environment only as each call starts: too late for
        # what decides the whole run (FABRIC_MUX_PARALLEL). Read now, as
        # fabric.yaml is read (stock fab's config has no mux defaults).
        load_environment(self.config)
        try:
            settings = mux_settings(self.config)
            if not (settings.parallel or settings.serial):
                return super().execute(*tasks)
            with _sigterm_interrupts():
                return self._execute_in_parallel(tasks)
        except Terminated:
            # Every host's outcome is written: now die of it, as its sender expects.
            self._close_opened()
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            raise
        finally:
            self._close_opened()

    def _close_opened(self) -> None:
        opened = self.run_state.opened
        while opened:
            opened.pop().close()

    def _execute_in_parallel(self, tasks: tuple[Any, ...]) -> dict[Any, Any]:
        """invoke's ``execute``, with each task's calls over its hosts run at once,
        batch by batch within the failure budget (see :mod:`fabric_mux.fleetrun`).

        Calls of one task for several hosts (consecutive, as ``fab`` expands
        them) are a wave; a call with no host (a pre- or post-task) runs alone.
        """
        from .fleetrun import FleetRun
        from .warmup import descriptor_room

        settings = mux_settings(self.config)
        if not settings.enabled:
            # Stock connections would write every host's bytes straight to
            # our stdout, mixed within lines: no parallel run without mux.
            raise Exit(
                "fabric-mux: -P (parallel) runs need mux, which is off here "
                "(--no-mux or mux.enabled: false); run without -P",
                code=1,
            )
        calls = self.normalize(tasks)
        direct = list(calls)
        expanded = self.expand_calls(calls)
        # Parallel hosts must not read our stdin at once: their prompts would
        # interleave (what a run asks, it asks through the master's askpass).
        self.config.run.in_stream = False

        def prepare(call: Any) -> None:
            self.config.load_collection(self.collection.configuration(call.called_as))
            load_environment(self.config)

        def run_call(call: Any, prefix: str | None, sink: Any) -> Any:
            parallel = isinstance(call, MuxConnectionCall)
            return self._run_call(call, direct, parallel, prefix, sink)

        fleet = FleetRun(
            _waves(expanded),
            settings,
            label=lambda call: _label(call.init_kwargs),
            run_call=run_call,
            prepare=prepare,
            prefetch=self._prefetch,
            on_interrupt=self._interrupted,
            # Unless the user says otherwise, every host at once: a host
            # waiting on its login or its commands costs a thread and a few
            # descriptors, and the masters' starts are paced on their own.
            width=settings.pool_size or descriptor_room(),
        )
        if not fleet.run(sys.argv):
            raise Exit(code=1)
        return fleet.results

    def _prefetch(self, calls: Sequence[Any]) -> Callable[[], None]:
        """Start the masters of ``calls``' hosts now, in the background (the next
        batch's, while this one works). Returns what stops the masters this
        started, should the run stop before those hosts run anything."""
        if not calls:
            return lambda: None
        from .ahead import StartedAhead

        hosts = []
        for call in calls:
            connection = MuxConnection(**dict(call.init_kwargs, config=host_config(self.config)))
            self.run_state.opened.append(connection)  # closed when the run ends
            hosts.append((connection, _key(call.init_kwargs)))
        starter = self.run_state.starter(self.config)
        return StartedAhead(starter, hosts, self.run_state.failures).stop

    def _interrupted(self, running: list[str]) -> None:
        """Ctrl-C in a parallel run: stop waiting on every host, and say where
        commands may still run (no signal crosses the mux protocol), and where
        the task had not got so far (its login is ended)."""
        reached = [host for host in running if host in self.run_state.reached]
        logging_in = [host for host in running if host not in self.run_state.reached]
        if reached:
            sys.stderr.write(
                f"fabric-mux: interrupted; commands may still be running on "
                f"{visible(', '.join(reached))} (only a pty carries Ctrl-C: run them "
                "with pty=True)\n"
            )
        if logging_in:
            sys.stderr.write(
                f"fabric-mux: interrupted while logging in to {visible(', '.join(logging_in))}: "
                "nothing ran there\n"
            )
        self.run_state.interrupt()

    def _run_call(
        self,
        call: Any,
        direct: list[Any],
        parallel: bool = False,
        prefix: str | None = None,
        sink: Any = None,
    ) -> Any:
        # A config of its own for each host at once: invoke rebuilds a config
        # on every write, and other threads reading it meanwhile see it empty.
        config = host_config(self.config) if parallel else self.config
        context = call_context(call, config, self.core)
        if isinstance(context, MuxConnection):
            context.show_output(prefix, sink)
        result = call.task(context, *call.args, **call.kwargs)
        if call in direct and call.autoprint:
            print(result)
        return result


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM (a cancelled CI job, ``kill``) ends a parallel run as Ctrl-C does:
    every host's outcome decided, the summary, the failed-hosts file and the
    report written. Python's own default would end the process with none of it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminated(number: int, frame: Any) -> None:
        raise Terminated("SIGTERM")

    previous = signal.getsignal(signal.SIGTERM)
    if previous == signal.SIG_IGN:  # whoever started us wants it ignored
        yield
        return
    signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _waves(calls: list[Any]) -> list[list[Any]]:
    """Consecutive calls of one task (and arguments) over several hosts, as one wave."""
    waves: list[list[Any]] = []
    hosts: set[str] = set()  # of the last wave: a host seen again starts the next
    for call in calls:
        previous = waves[-1][0] if waves else None
        host = _label(call.init_kwargs) if isinstance(call, MuxConnectionCall) else ""
        if (
            isinstance(call, MuxConnectionCall)
            and isinstance(previous, MuxConnectionCall)
            and call.task is previous.task
            and (call.args, call.kwargs) == (previous.args, previous.kwargs)
            and host not in hosts
        ):
            waves[-1].append(call)
        else:
            waves.append([call])
            hosts = set()
        hosts.add(host)
    return waves


def _label(init_kwargs: dict[str, Any]) -> str:
    """A host as the run names it: ``web1``, ``deploy@web1:2222``."""
    host = str(init_kwargs.get("host", "?"))
    user, port = init_kwargs.get("user"), init_kwargs.get("port")
    return f"{user + '@' if user else ''}{host}{f':{port}' if port else ''}"


def _named_hosts(value: str) -> list[str]:
    """The hosts an ``-H`` value names: ranges expanded (``web[01-40]``, see
    :mod:`fabric_mux.hostlist`), blank entries dropped (``web1,,web2``, a
    trailing comma), and the blanks around a name (``web1, web2``), which no host
    name holds. ``@FILE`` stays as it is written (brackets too), for
    :meth:`MuxExecutor.normalize_hosts`.

    :raises EmptyHostList: it names none (``-H ""``, ``-H ,``: an empty
        ``$HOSTS`` in a script). Fabric would run the task on this machine, or
        fail a remote command with a traceback; neither is what it meant.
    """
    named: list[str] = []
    for item in split_hosts(value):
        # A file's name is a name: @hosts[2].txt is that file, not hosts2.txt.
        named.extend([item] if item.startswith("@") else expand(item))
    named = list(dict.fromkeys(named))
    if not named:
        raise EmptyHostList(f"-H {value!r} names no host: nothing to run on")
    for name in named:
        if name == "@":
            raise BadHostList(f"-H {value!r}: '@' names no file (a host file is -H @FILE)")
        if not name.startswith("@") and _names_no_host(name):
            raise EmptyHostList(
                f"-H {value!r}: {name!r} names no host, only an account or a port: "
                "nothing to run on there"
            )
    return named


def _check_own_hosts(call: Any) -> None:
    """Refuse a task (or pre- or post-task) whose own ``hosts`` names no host
    (``hosts=[]``, or a list that came out empty): Fabric would run it on this
    machine, as it runs a task given no ``hosts`` at all (None)."""
    hosts = getattr(call, "hosts", None)  # a Call reads its task's
    if hosts is not None and not hosts:
        name = getattr(call, "called_as", None) or getattr(call, "name", None) or "?"
        raise EmptyHostList(f"the task {name!r} names no host (hosts={hosts!r}): nothing to run on")


def _blank(value: Any) -> bool:
    host = value.get("host") if isinstance(value, dict) else value
    return isinstance(host, str) and not host.strip()


def _names_no_host(value: Any) -> bool:
    """A host given as text (or a dict's ``host``) that names none: blank, or only
    an account or a port (``deploy@``, ``:22``)."""
    host = value.get("host") if isinstance(value, dict) else value
    return isinstance(host, str) and names_no_host(host)
