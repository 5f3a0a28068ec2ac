"""``fabric-mux-shell``: the ``$SHELL`` of a master's children, and the variables
that tell our askpass helper where to ask.

ssh runs a ProxyCommand, a LocalCommand and every ``Match exec`` as ``$SHELL -c
COMMAND``; a config with several ``Match exec`` lines starts this program for
each ``ssh -G`` and each login. So it imports nothing but ``os`` and ``sys``
(about a Python start; the askpass module, with its sockets and peer checks, is
never loaded here).
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

__all__ = [
    "ASKPASS_VARIABLES",
    "ENV_CHILDREN",
    "ENV_DISPLAY",
    "ENV_SHELL",
    "ENV_SOCKET",
    "ENV_USERS_ASKPASS",
    "ENV_USERS_ASKPASS_REQUIRE",
    "HELPER",
    "OUR_DISPLAY",
    "SHELL_HELPER",
    "USAGE",
    "helper_environment",
    "installed",
    "shell_main",
]

#: The environment variable that tells the helper where to ask.
ENV_SOCKET = "FABRIC_MUX_ASKPASS_SOCKET"
#: The user's own shell, for ``fabric-mux-shell`` to start.
ENV_SHELL = "FABRIC_MUX_SHELL"
#: The terminal-only socket that the master's children ask instead.
ENV_CHILDREN = "FABRIC_MUX_ASKPASS_CHILDREN"
#: The user's own ``SSH_ASKPASS`` and ``SSH_ASKPASS_REQUIRE``, for the master's
#: children to get back where we do not relay their prompts.
ENV_USERS_ASKPASS = "FABRIC_MUX_USERS_ASKPASS"
ENV_USERS_ASKPASS_REQUIRE = "FABRIC_MUX_USERS_ASKPASS_REQUIRE"
#: Set when ``DISPLAY`` is ours (ssh before 8.4 asks askpass only with one):
#: the master's children get the user's environment back, without it.
ENV_DISPLAY = "FABRIC_MUX_DISPLAY"
#: What ``DISPLAY`` says when we set it: nothing connects to it.
OUR_DISPLAY = "fabric-mux:0"
#: Every variable the master gets for asking us; its children get none of them.
ASKPASS_VARIABLES = (
    "SSH_ASKPASS",
    "SSH_ASKPASS_REQUIRE",
    ENV_SOCKET,
    ENV_SHELL,
    ENV_CHILDREN,
    ENV_USERS_ASKPASS,
    ENV_USERS_ASKPASS_REQUIRE,
    ENV_DISPLAY,
)
HELPER = "fabric-mux-askpass"
SHELL_HELPER = "fabric-mux-shell"


def installed(program: str) -> str:
    """An installed helper program, beside this Python or on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), program)
    if os.path.exists(beside):
        return beside
    import shutil  # only where the helper is not beside this Python

    found = shutil.which(program)
    if found is None:
        raise FileNotFoundError(f"{program} is not installed (pip install fabric-mux)")
    return found


def helper_environment(socket_path: str, *, display: bool) -> dict[str, str]:
    """What makes ssh (or ssh-add) ask our helper, which asks ``socket_path``.

    ``display``: for ssh before 8.4, which ignores ``SSH_ASKPASS_REQUIRE`` and
    asks the askpass program only with no terminal (the master has none: its
    own session) and ``DISPLAY`` set. The user's ``DISPLAY`` is kept; if there
    is none, one that nothing connects to is set, and marked as ours.
    """
    environment = {
        "SSH_ASKPASS": installed(HELPER),
        "SSH_ASKPASS_REQUIRE": "force",
        ENV_SOCKET: socket_path,
    }
    if display and not os.environ.get("DISPLAY"):
        environment.update({"DISPLAY": OUR_DISPLAY, ENV_DISPLAY: "1"})
    return environment


USAGE = f"""usage: {SHELL_HELPER} -c COMMAND

The shell fabric-mux gives the children of an OpenSSH master it starts
(ProxyCommand, LocalCommand, Match exec): COMMAND runs in your own shell
(the $SHELL fabric-mux was started with, else /bin/sh), without the variables
that let the master ask fabric-mux for secrets. ssh starts it; there is no
need to run it by hand.
"""


def shell_main() -> NoReturn:
    """``$SHELL`` for a master's children: the user's shell, without the master's askpass.

    ssh runs a ProxyCommand as ``$SHELL -c 'exec COMMAND'``. The command (often
    another ssh) never sees the socket that answers with secrets; where the
    user has a terminal, it asks through one that only relays to it; else it
    gets the user's own ``SSH_ASKPASS`` back, as their own ssh would.
    """
    if sys.argv[1:] == ["--help"]:
        # Only a person asks this (ssh always gives -c): every other argv,
        # -h included (sh's hashall), goes to the shell as it is.
        sys.stdout.write(USAGE)
        sys.exit(0)
    shell = os.environ.get(ENV_SHELL) or ""
    relay = os.environ.get(ENV_CHILDREN)
    ours = os.environ.get(ENV_DISPLAY)
    env = {name: value for name, value in os.environ.items() if name not in ASKPASS_VARIABLES}
    # What the user's own ssh would have had: their askpass (a ProxyCommand's ssh
    # may answer its bastion's prompts through it), unless we relay to a terminal.
    for mine, saved in (
        ("SSH_ASKPASS", ENV_USERS_ASKPASS),
        ("SSH_ASKPASS_REQUIRE", ENV_USERS_ASKPASS_REQUIRE),
    ):
        if saved in os.environ:
            env[mine] = os.environ[saved]
    if ours:
        env.pop("DISPLAY", None)  # the user had none
    if relay:
        env.update(helper_environment(relay, display=False))
        if ours:  # its own ssh may be older than 8.4 too
            env["DISPLAY"] = OUR_DISPLAY
    if shell:
        env["SHELL"] = shell
    else:
        env.pop("SHELL", None)  # ssh's own fallback when SHELL is unset
        shell = "/bin/sh"
    if not os.path.isabs(shell):
        # execve() would look for it in whatever folder ssh runs in.
        _fail(f"{ENV_SHELL} (your SHELL) is {shell!r}, not a full path: set SHELL to one", 127)
    try:
        os.execve(shell, [shell, *sys.argv[1:]], env)
    except OSError as exc:
        code = 127 if isinstance(exc, FileNotFoundError) else 126  # as sh says it
        _fail(f"cannot run your shell {shell} ({ENV_SHELL}): {exc.strerror}", code)


def _fail(why: str, code: int) -> NoReturn:
    """One line on stderr (ssh shows it, or keeps it in the master's error log)."""
    sys.stderr.write(f"{SHELL_HELPER}: {why}\n")
    sys.exit(code)
