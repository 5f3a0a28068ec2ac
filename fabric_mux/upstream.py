"""The private parts of invoke, fabric and paramiko that fabric-mux relies on, in one place.

A release of either could rename any of them; ``tests/test_upstream.py`` fails
loudly, naming the one that went, instead of letting a run break obscurely.
Everything else fabric-mux uses of them is public API.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any

__all__ = [
    "RELIED_ON",
    "call_context",
    "host_config",
    "load_shell_env",
    "runtime_ssh_path",
    "set_attributes",
    "set_overrides",
]

#: (module, class, attribute) for each private name used, and where it is used.
RELIED_ON: tuple[tuple[str, str, str, str], ...] = (
    # runners.MuxRemote overrides these invoke Runner internals.
    ("invoke.runners", "Runner", "_handle_output", "wraps it to stop waits on a failure"),
    ("invoke.runners", "Runner", "_write_proc_stdin", "writes a session's stdin"),
    # ... and reads these instance attributes, set in Runner.__init__.
    ("invoke.runners", "Runner", "_timer", "cancels the timeout timer in stop()"),
    ("invoke.runners", "Runner", "_disowned", "starts a disowned command"),
    ("invoke.runners", "Runner", "_finish", "runners.MuxRemote ends its session there"),
    ("invoke.runners", "Runner", "_run_body", "says a Ctrl-C that lands before invoke waits"),
    # connection.MuxConnection hands fabric its own runner for run() and sudo(),
    ("fabric.connection", "Connection", "_remote_runner", "gives run() a MuxRemote"),
    # ... and sets its config past invoke's DataProxy (see set_attributes).
    ("invoke.config", "DataProxy", "_set", "sets attributes past the config proxy"),
    # group.MuxGroup opens every member's master at once before Fabric's loop.
    ("fabric.group", "Group", "_do", "opens the masters before each group call"),
    # connection.MuxConnection overrides fabric's equality key.
    ("fabric.connection", "Connection", "_identity", "keeps aliases of one address apart"),
    # The runtime ssh_config (fab -S) and command-line overrides.
    ("fabric.config", "Config", "_runtime_ssh_path", "the ssh_config given to ssh -F"),
    ("invoke.config", "Config", "_overrides", "fabmux's --mux-* flags"),
    # load_shell_env: invoke's, with a reader of the environment of our own.
    ("invoke.config", "Config", "_config", "reads FABRIC_MUX_* variables as text"),
    ("invoke.config", "Config", "_env_prefix", "reads FABRIC_MUX_* variables as text"),
    ("invoke.env", "Environment", "_crawl", "maps every FABRIC_MUX_* variable"),
    ("invoke.env", "Environment", "_path_set", "keeps a FABRIC_MUX_* variable's text"),
    ("invoke.env", "Environment", "_to_env_var", "names the FABRIC_MUX_* variables"),
    # host_config: invoke's clone, sharing the parsed ssh_config.
    ("invoke.config", "Config", "_clone_init_kwargs", "a parallel run's per-host configs"),
    ("invoke.config", "Config", "load_base_conf_files", "a parallel run's per-host configs"),
    ("invoke.config", "Config", "_modifications", "a parallel run's per-host configs"),
    ("fabric.config", "Config", "_user_ssh_path", "a parallel run's per-host configs"),
)

#: Of :data:`RELIED_ON`, the ones that exist only on instances.
INSTANCE_ATTRIBUTES = frozenset(
    {
        "_timer",
        "_disowned",
        "_runtime_ssh_path",
        "_overrides",
        "_modifications",
        "_user_ssh_path",
        "_config",
        "_env_prefix",
    }
)

#: The data levels invoke's ``Config.clone`` copies (invoke 2.2), in its order.
_LEVELS = (
    "collection system_prefix system_path system_found system user_prefix user_path"
    " user_found user project_prefix project_path project_found project env_prefix env"
    " runtime_path runtime_found runtime overrides modifications"
).split()


def call_context(call: Any, config: Any, core: Any) -> Any:
    """``call.make_context(config)``: invoke 3 asks for the core parse result too
    (``core_parse_result``), as its executor passes it; invoke 2 takes none."""
    if "core_parse_result" in inspect.signature(call.make_context).parameters:
        return call.make_context(config, core_parse_result=core)
    return call.make_context(config)


def host_config(config: Any) -> Any:
    """``config.clone()`` for one host of a parallel run, at a fraction of the cost.

    Fabric's ``clone`` deep-copies the parsed ssh_config into every copy, and
    first parses the files again into the original (appending: each copy is
    bigger than the one before), which over hundreds of hosts costs seconds.
    This is invoke's own clone, with the parsed ssh_config shared: fabric-mux
    only reads it (``ssh`` reads the files itself).
    """
    from fabric.config import Config as FabricConfig
    from invoke.config import Config as InvokeConfig
    from invoke.config import merge_dicts

    if not isinstance(config, FabricConfig):
        return config.clone()
    kwargs = InvokeConfig._clone_init_kwargs(config)
    new = type(config)(**kwargs, ssh_config=config.base_ssh_config)
    for name in _LEVELS:
        mine = getattr(config, f"_{name}")
        if isinstance(mine, dict):
            merge_dicts(getattr(new, f"_{name}"), mine)
        else:
            new._set(f"_{name}", copy.copy(mine))
    new.load_base_conf_files()
    new.merge()
    for attr in ("_runtime_ssh_path", "_system_ssh_path", "_user_ssh_path"):
        new._set(attr, getattr(config, attr))
    return new


def load_shell_env(config: Any, loader_class: type[Any]) -> None:
    """invoke's ``Config.load_shell_env``, reading the environment with ``loader_class``
    (an ``invoke.env.Environment``)."""
    config.merge()
    loader = loader_class(config=config._config, prefix=config._env_prefix)
    config._set(_env=loader.load())
    config.merge()


def runtime_ssh_path(config: Any) -> str | None:
    """The ssh_config given at run time (``fab -S``, ``Config(runtime_ssh_path=...)``)."""
    path: str | None = config._runtime_ssh_path
    return path


def set_overrides(config: Any, section: str, values: dict[str, Any]) -> None:
    """Put ``values`` into ``section`` at the config's override level (as ``-`` flags do)."""
    config._overrides.setdefault(section, {}).update(values)
    config.merge()


def set_attributes(proxy: Any, **values: Any) -> None:
    """Set real attributes on an invoke ``DataProxy`` (a Context, a Connection), which
    would otherwise write them into its config."""
    proxy._set(**values)
