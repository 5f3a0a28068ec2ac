"""Answer a master's prompts: each secret only to its own prompt, only to the master's ssh.

ssh runs ``SSH_ASKPASS`` (``SSH_ASKPASS_REQUIRE=force``) with the prompt as its
argument and reads the answer from its stdout. Our helper, ``fabric-mux-askpass``,
sends the prompt over a UNIX socket in the private control folder to the
process starting the master, which decides:

- the password answers only ``USER@HOST's password: `` and the
  keyboard-interactive ``(USER@HOST) Password:`` of the master's own user and
  host, as OpenSSH words them; the key passphrase only
  ``Enter passphrase for key 'PATH': `` for one of the connection's own
  identity files. Whole prompts are matched, never words: a server writes
  keyboard-interactive text only after the ``(USER@HOST) `` that ssh puts first.
- ssh before 8.5 puts nothing before a server's keyboard-interactive text, so
  the server can word any prompt like ssh's own. There the passphrase answers
  no prompt of the master at all: it goes to ``ssh-add`` loading the keys into
  a private agent (:mod:`fabric_mux.agent`), which talks to no server. The
  password still answers ``USER@HOST's password: `` (and a bare
  ``Password:``): whoever can write those is the server the master connects
  to, after its host key was checked, and that server is who the password is
  for, as the password method hands it over anyway.
- each secret is given once per master start (a wrong one costs one attempt);
- every other prompt (a one-time code, a new host key's question) is asked on
  the user's terminal, where there is one, and declined where there is none.

Only the master's own ``ssh`` may ask: the server checks, with the kernel's
peer credentials, that the helper runs as us and is a child of the ssh it
started. The master's ProxyCommand and LocalCommand children run through
``fabric-mux-shell``, which removes these variables before starting the
user's shell; where there is a terminal, it points them at a second server
that holds no secret and only relays their prompts to the terminal (a
ProxyCommand's ``ssh bastion`` asking for the bastion's password), as they
would be asked without fabric-mux. Secrets are never in any process's argv
or environment.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType

from .answers import PromptAnswers
from .childshell import (
    ENV_CHILDREN,
    ENV_SHELL,
    ENV_SOCKET,
    ENV_USERS_ASKPASS,
    ENV_USERS_ASKPASS_REQUIRE,
    HELPER,
    SHELL_HELPER,
    helper_environment,
    installed,
)
from .peers import parent_pid, peer_credentials
from .terminal import ask_on_terminal, terminal_available

__all__ = [
    "ENV_SOCKET",
    "Asking",
    "AskpassServer",
    "PromptAnswers",
    "ask_on_terminal",
    "asking",
    "main",
    "terminal_available",
]

log = logging.getLogger("fabric_mux")

#: Seconds the server waits to learn the master's pid before judging a prompt.
_PID_WAIT = 10.0
#: Seconds an asker has to send its prompt.
_READ_TIMEOUT = 5.0


class AskpassServer:
    """Serves the helper's prompts while a master starts; a context manager.

    Call :meth:`expect_parent` with the master's pid once it runs: prompts
    from any other process are declined (``children``: from any process that
    is not below it).
    """

    def __init__(
        self,
        directory: Path,
        answer: Callable[[str, str], str | None],
        *,
        children: bool = False,
    ) -> None:
        self.path = str(directory / f"askpass-{secrets.token_hex(4)}")
        self._answer = answer
        #: False: only the master's ssh itself may ask; True: only processes it started.
        self._children = children
        self._parent: int | None = None
        self._parent_known = threading.Event()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> AskpassServer:
        self._listener.bind(self.path)
        # Ours alone, even inside the private folder. (Not by umask: that is
        # process-wide and would change files other threads create meanwhile.)
        os.chmod(self.path, 0o600)
        self._listener.listen(4)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop serving and remove the socket; later calls do nothing."""
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        self._parent_known.set()
        if self._thread.is_alive():
            self._thread.join(5)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def expect_parent(self, pid: int) -> None:
        """Only a helper whose parent is ``pid`` (the master's ssh) gets answers."""
        self._parent = pid
        self._parent_known.set()

    def _may_ask(self, conn: socket.socket) -> bool:
        try:
            peer = peer_credentials(conn)
        except OSError:
            return False
        if peer.uid != os.geteuid():
            log.warning("declined a prompt from uid %d on %s", peer.uid, self.path)
            return False
        if peer.pid is None:
            log.warning("declined a prompt on %s: this system does not say who asks", self.path)
            return False
        self._parent_known.wait(_PID_WAIT)
        master = self._parent
        parent = parent_pid(peer.pid)
        if self._children:
            allowed = master is not None and parent != master and _descends_from(peer.pid, master)
        else:
            allowed = master is not None and parent == master
        if not allowed:
            log.warning(
                "declined a prompt on %s from pid %d: not %s the master's ssh (pid %s)",
                self.path,
                peer.pid,
                "below" if self._children else "a child of",
                master,
            )
        return allowed

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return  # closed: the master has started (or failed)
            with conn:
                conn.settimeout(_READ_TIMEOUT)  # an asker that says nothing is dropped
                try:
                    said = _read_all(conn)
                except OSError:
                    continue
                hint, _, prompt = said.decode("utf-8", "replace").partition("\0")
                answer = None
                if self._may_ask(conn):
                    try:
                        answer = self._answer(prompt, hint)
                    except Exception:  # e.g. EOF at a terminal prompt: decline, keep serving
                        answer = None
                reply = b"0" if answer is None else b"1" + answer.encode("utf-8")
                try:
                    conn.sendall(reply)
                except OSError:
                    pass


def _read_all(conn: socket.socket) -> bytes:
    chunks = []
    while chunk := conn.recv(4096):
        chunks.append(chunk)
    return b"".join(chunks)


def _descends_from(pid: int, ancestor: int) -> bool:
    for _ in range(64):  # a ProxyCommand's ssh sits one or two levels down
        parent = parent_pid(pid)
        if parent is None or parent <= 1:
            return False
        if parent == ancestor:
            return True
        pid = parent
    return False


class Asking:
    """The askpass servers of one master start; see :func:`asking`."""

    def __init__(self, environment: dict[str, str], servers: list[AskpassServer]) -> None:
        #: What to add to the master's environment.
        self.environment = environment
        self._servers = servers

    def started(self, pid: int) -> None:
        """The master's ssh runs as ``pid``: its prompts, and its children's, may come."""
        for server in self._servers:
            server.expect_parent(pid)

    def stop(self) -> None:
        """Serve no more prompts (before the master's pid is reaped and may be reused)."""
        for server in self._servers:
            server.close()


@contextlib.contextmanager
def asking(directory: Path, answers: PromptAnswers, *, display: bool = False) -> Iterator[Asking]:
    """Serve a master's prompts while it starts.

    Whatever the master runs through ``$SHELL`` (a ProxyCommand, a
    LocalCommand, a ``Match exec``) gets ``fabric-mux-shell``, so it never sees
    the secrets' socket; with a terminal, its own prompts go to a second
    server that only relays them there. ``display``: see
    :func:`helper_environment`.
    """
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(AskpassServer(directory, answers))
        environment = helper_environment(server.path, display=display)
        servers = [server]
        for mine, saved in (
            ("SSH_ASKPASS", ENV_USERS_ASKPASS),
            ("SSH_ASKPASS_REQUIRE", ENV_USERS_ASKPASS_REQUIRE),
        ):
            if mine in os.environ:
                environment[saved] = os.environ[mine]
        environment[ENV_SHELL] = os.environ.get("SHELL", "")
        environment["SHELL"] = installed(SHELL_HELPER)
        if answers.terminal is not None:
            relay = AskpassServer(directory, answers.terminal, children=True)
            servers.append(stack.enter_context(relay))
            environment[ENV_CHILDREN] = relay.path
        yield Asking(environment, servers)


USAGE = f"""usage: {HELPER} PROMPT

The askpass helper of the OpenSSH masters that fabric-mux starts: ssh runs it
with a prompt, and it prints the answer that fabric-mux's askpass server gives
(over the socket in ${ENV_SOCKET}), or exits 1 for none. Not for use by hand."""


def main(argv: list[str] | None = None) -> int:
    """The helper ssh runs: print the answer to the prompt, or exit 1 for none."""
    args = sys.argv[1:] if argv is None else argv
    path = os.environ.get(ENV_SOCKET)
    if not path:
        # Not run by a master of ours: a person asking what this is. (Under a
        # master, "--help" is a prompt like any other, which a server could send.)
        if args in (["--help"], ["-h"]):
            print(USAGE)
            return 0
        print(f"{HELPER}: {ENV_SOCKET} is not set", file=sys.stderr)
        return 1
    hint = os.environ.get("SSH_ASKPASS_PROMPT", "")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        try:
            conn.connect(path)
            if peer_credentials(conn).uid != os.geteuid():
                print(f"{HELPER}: {path} is not served by us", file=sys.stderr)
                return 1
            conn.sendall(f"{hint}\0{args[0] if args else ''}".encode())
            conn.shutdown(socket.SHUT_WR)
            reply = _read_all(conn)
        except OSError as exc:
            print(f"{HELPER}: {exc}", file=sys.stderr)
            return 1
    if not reply.startswith(b"1"):
        return 1
    sys.stdout.buffer.write(reply[1:] + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
