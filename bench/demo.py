"""``inv demo``: the same three-task deploy with stock ``fab``, then with the MuxExecutor."""

from __future__ import annotations

import shlex
import time
from contextlib import ExitStack

from .common import (
    console_script,
    control_dir,
    light_server,
    reaping,
    remote_folder,
    run_quiet,
    scratch,
    unwinding_on_signals,
)

__all__ = ["run_demo"]

TASKS = ("check", "upload", "restart")

FABFILE = '''\
"""A small deploy: each task is one fab task, so stock Fabric logs in for each."""

from fabric import task

APP = {app!r}


@task
def check(c):
    c.run("uname -sr")
    c.run("uptime")


@task
def upload(c):
    c.run(f"mkdir -p {{APP}}/releases")
    c.run(f"echo release-$(date +%s) > {{APP}}/releases/current")
    c.run(f"ls {{APP}}/releases")


@task
def restart(c):
    c.run(f"echo stopping; rm -f {{APP}}/app.pid")
    c.run(f"echo $$ > {{APP}}/app.pid")
    c.run(f"echo started with $(cat {{APP}}/releases/current)")
'''

FABRIC_YAML = """\
tasks:
  executor_class: fabric_mux.MuxExecutor
mux:
  control_dir: {control_dir}
"""


def run_demo() -> None:
    """Run the deploy twice without mux and twice with it; print times and logins."""
    with ExitStack() as stack:
        # Entered first, left last: reaps what the clean-ups below ended.
        stack.enter_context(reaping())
        stack.enter_context(unwinding_on_signals())
        server = light_server(stack, prefix="fmd-srv-")
        project = scratch(stack, "fmd-proj-")
        # Stopped before the server goes (callbacks unwind last in, first out).
        controls = control_dir(stack, prefix="fmd-ctl-")
        app = remote_folder(server, "app")
        (project / "fabfile.py").write_text(FABFILE.format(app=str(app)))
        argv = [console_script("fab"), "-S", str(server.ssh_config), "-H", server.alias, *TASKS]
        print(f"server: {server.user}@{server.host}:{server.port} (alias {server.alias})")
        print(f"project: {project}")
        print(f"command: {shlex.join(argv)}\n")

        rows: list[tuple[str, int, float, int]] = []
        output = ""
        for variant in ("stock fab", "fab + MuxExecutor"):
            if variant != "stock fab":
                yaml = FABRIC_YAML.format(control_dir=controls)
                (project / "fabric.yaml").write_text(yaml)
                print(f"{project / 'fabric.yaml'}:\n{_indent(yaml)}")
            for run in (1, 2):
                before = server.logins()
                start = time.perf_counter()
                output = run_quiet(argv, cwd=project)
                seconds = time.perf_counter() - start
                rows.append((variant, run, seconds, server.logins() - before))
        print(f"output of the last run:\n{_indent(output)}")
        print(_table(rows))
    print("masters stopped, server stopped, temporary folders removed")


def _indent(text: str) -> str:
    return "".join(f"    {line}\n" for line in text.splitlines())


def _table(rows: list[tuple[str, int, float, int]]) -> str:
    lines = ["| variant | run | wall time | logins |", "| --- | ---: | ---: | ---: |"]
    lines += [f"| {v} | {run} | {s:.2f} s | {n} |" for v, run, s, n in rows]
    return "\n".join(lines)
