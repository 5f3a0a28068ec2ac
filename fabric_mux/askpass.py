"""Answer the master's password and passphrase prompts without exposing the secret.

ssh runs ``SSH_ASKPASS`` (``SSH_ASKPASS_REQUIRE=force``) with the prompt as its
argument and reads the answer from its stdout. Our helper, ``fabric-mux-askpass``,
sends the prompt over a UNIX socket in the private control folder to the
process starting the master, which answers it: the secret is never in any
process's argv or environment, only in the socket's one reply.
"""

from __future__ import annotations

import getpass
import os
import secrets
import shutil
import socket
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType

__all__ = ["ENV_SOCKET", "Answer", "AskpassServer", "ask_on_terminal", "main"]

#: The environment variable that tells the helper where to ask.
ENV_SOCKET = "FABRIC_MUX_ASKPASS_SOCKET"
HELPER = "fabric-mux-askpass"

Answer = Callable[[str], "str | None"]


def ask_on_terminal(prompt: str) -> str | None:
    """Ask the user on their terminal (a one-time code, say); None without one."""
    try:
        os.close(os.open("/dev/tty", os.O_RDWR))
    except OSError:
        return None
    return getpass.getpass(prompt)


def helper_path() -> str:
    """The installed helper program, beside this Python or on PATH."""
    beside = Path(sys.executable).with_name(HELPER)
    if beside.exists():
        return str(beside)
    found = shutil.which(HELPER)
    if found is None:
        raise FileNotFoundError(f"{HELPER} is not installed (pip install fabric-mux)")
    return found


class AskpassServer:
    """Serves prompts from the helper while a master starts; a context manager."""

    def __init__(self, directory: Path, answer: Answer) -> None:
        self.path = str(directory / f"askpass-{secrets.token_hex(4)}")
        self._answer = answer
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
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        self._thread.join(5)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def environment(self) -> Mapping[str, str]:
        """What the master's environment needs so that ssh asks us."""
        return {
            "SSH_ASKPASS": helper_path(),
            "SSH_ASKPASS_REQUIRE": "force",
            ENV_SOCKET: self.path,
        }

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return  # closed: the master has started (or failed)
            with conn:
                prompt = _read_all(conn).decode("utf-8", "replace")
                try:
                    answer = self._answer(prompt)
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


def main(argv: list[str] | None = None) -> int:
    """The helper ssh runs: print the answer to the prompt, or exit 1 for none."""
    args = sys.argv[1:] if argv is None else argv
    path = os.environ.get(ENV_SOCKET)
    if not path:
        print(f"{HELPER}: {ENV_SOCKET} is not set", file=sys.stderr)
        return 1
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        try:
            conn.connect(path)
            conn.sendall((args[0] if args else "").encode("utf-8"))
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
