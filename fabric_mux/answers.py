"""Which prompt of a master's start gets which secret (see :mod:`fabric_mux.askpass`
for the rules): the password, the key passphrase, each once, each to its own
prompt only; the rest asked on the terminal, or declined."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from .terminal import Terminal

__all__ = ["SSH", "SSH_ADD", "UNMARKED_SSH", "PromptAnswers"]

log = logging.getLogger("fabric_mux")


#: Who asks for a secret: ssh that marks a server's prompts with ``(USER@HOST) ``
#: (8.5 on), ssh that does not, and ssh-add loading keys into a private agent.
SSH = "ssh"
UNMARKED_SSH = "ssh before 8.5"
SSH_ADD = "ssh-add"


class _Record:
    """What the answers of one master start gave and declined, whoever asked."""

    def __init__(self) -> None:
        self.given: set[str] = set()
        self.declined: list[str] = []
        self.lock = threading.Lock()


class PromptAnswers:
    """Answers for one master start's prompts; see the module's rules.

    :param user: the remote user, as ``ssh -G`` resolved it.
    :param host: ``HostKeyAlias`` if set, else ``HostName``: what ssh names in its prompts.
    :param identity_files: the connection's own identity and certificate files,
        expanded as ssh expands them.
    :param terminal: asks the user; None: decline what no secret answers.
    :param asker: who asks (:data:`SSH`, :data:`UNMARKED_SSH`, :data:`SSH_ADD`);
        see :meth:`for_ssh` and :meth:`for_ssh_add`.
    """

    def __init__(
        self,
        *,
        user: str,
        host: str,
        identity_files: Iterable[str] = (),
        password: str | None = None,
        passphrase: str | None = None,
        terminal: Terminal | None = None,
        asker: str = SSH,
        record: _Record | None = None,
    ) -> None:
        # ssh lower-cases the host name it connects to, and prints at most
        # 100 bytes of a key's path.
        who = f"{user}@{host.lower()}"
        self._password_prompt = f"{who}'s password: "
        self._keyboard_prefix = f"({who}) "
        if asker == SSH_ADD:
            # ssh-add names the file as given on its command line.
            self._passphrase_prompts = {f"Enter passphrase for {path}: " for path in identity_files}
        else:
            self._passphrase_prompts = {
                f"Enter passphrase for key '{_first_bytes(path, 100)}': " for path in identity_files
            }
        self._secrets = {"password": password, "passphrase": passphrase}
        self._settings = (user, host, tuple(identity_files))
        self.asker = asker
        #: Asks the user (None: no terminal).
        self.terminal = terminal
        self._record = record or _Record()

    def _with(self, **changes: object) -> PromptAnswers:
        user, host, identity_files = self._settings
        settings: dict[str, object] = {
            "user": user,
            "host": host,
            "identity_files": identity_files,
            "password": self._secrets["password"],
            "passphrase": self._secrets["passphrase"],
            "terminal": self.terminal,
            "asker": self.asker,
            "record": self._record,
        }
        settings.update(changes)
        return PromptAnswers(**settings)  # type: ignore[arg-type]

    def renewed(self) -> PromptAnswers:
        """The same answers, each to be given once more (for a new attempt to connect)."""
        return self._with(record=_Record())

    def for_ssh(self, marks_server_prompts: bool) -> PromptAnswers:
        """These answers for the master's own ssh; ``marks_server_prompts``: whether
        it puts ``(USER@HOST) `` before a server's prompts (8.5 on). If not, the
        passphrase answers none of its prompts (see :meth:`for_ssh_add`).
        Given and declined are shared with this object."""
        return self._with(asker=SSH if marks_server_prompts else UNMARKED_SSH)

    def for_ssh_add(self) -> PromptAnswers:
        """These answers for ``ssh-add`` loading the keys into a private agent: only
        its passphrase prompts for the connection's own keys, nothing asked of
        the user. Given and declined are shared with this object."""
        return self._with(asker=SSH_ADD, terminal=None)

    @property
    def declined(self) -> list[str]:
        """Prompts declined, for the error that follows."""
        return self._record.declined

    @property
    def identity_files(self) -> tuple[str, ...]:
        return self._settings[2]

    @property
    def has_password(self) -> bool:
        return bool(self._secrets["password"])

    @property
    def has_passphrase(self) -> bool:
        return bool(self._secrets["passphrase"])

    @property
    def asks_anything(self) -> bool:
        """Whether a master needs the helper at all."""
        return self.terminal is not None or any(self._secrets.values())

    def _kind(self, prompt: str) -> str | None:
        if self.asker == SSH_ADD:
            return "passphrase" if prompt in self._passphrase_prompts else None
        if prompt == self._password_prompt:
            return "password"
        if self.asker == UNMARKED_SSH:
            # Any prompt may be the server's: only the password, only for it.
            return "password" if prompt.strip().lower() == "password:" else None
        if prompt.startswith(self._keyboard_prefix):
            said = prompt[len(self._keyboard_prefix) :].strip().lower()
            return "password" if said == "password:" else None
        if prompt in self._passphrase_prompts:
            return "passphrase"
        return None

    def __call__(self, prompt: str, hint: str = "") -> str | None:
        kind = self._kind(prompt)
        secret = self._secrets.get(kind) if kind else None
        record = self._record
        if kind and secret:
            with record.lock:
                if kind in record.given:
                    log.info("declined a second %s prompt: the first answer was refused", kind)
                    record.declined.append(prompt.strip())
                    return None
                record.given.add(kind)
            return secret
        if self.terminal is None:
            log.info("declined a prompt with no terminal to ask on: %r", prompt.strip())
            with record.lock:
                record.declined.append(prompt.strip())
            return None
        return self.terminal(prompt, hint)

    def note(self) -> str:
        """What the prompts tell about a failed login, for the error's last line."""
        notes = []
        record = self._record
        if "passphrase" in record.given:
            notes.append("the key passphrase from connect_kwargs was given and refused")
        if "password" in record.given:
            notes.append("the password from connect_kwargs was given once")
        if record.declined:
            asked = ", ".join(repr(prompt) for prompt in record.declined)
            notes.append(f"declined with nobody to answer: {asked}")
        return "; ".join(notes)


def _first_bytes(text: str, count: int) -> str:
    """``text`` cut as C's ``%.100s`` cuts it: after ``count`` bytes, not characters
    (a split character comes through the helper as U+FFFD, here too)."""
    return text.encode("utf-8")[:count].decode("utf-8", "replace")
