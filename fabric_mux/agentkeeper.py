"""The command a private ssh-agent runs (see :mod:`fabric_mux.agent`): it ends the agent
when the process that started it closes its stdin, or dies.

``ssh-agent -a SOCKET COMMAND`` runs the agent as the command's child
(``SSH_AGENT_PID``), and the agent ends by itself within 10 s of the
command's end. Only the standard library here: this starts on every use.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

__all__ = ["main"]


def main() -> None:
    """Say the agent's pid (it listens by now), wait for stdin's end, end the agent."""
    agent = int(os.environ["SSH_AGENT_PID"])
    print(agent, flush=True)
    try:
        while sys.stdin.buffer.read(4096):
            pass
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(agent, signal.SIGTERM)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(agent, 0)


if __name__ == "__main__":
    main()
