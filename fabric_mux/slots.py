"""How many sessions this process may have open on one master at once."""

from __future__ import annotations

import threading

__all__ = ["SessionSlots", "Slot"]


class Slot:
    """One session's place among a master's :class:`SessionSlots`."""

    def __init__(self, slots: SessionSlots) -> None:
        self._slots = slots
        self.held = True

    def release(self) -> None:
        """Give the place back; later calls do nothing."""
        self._slots._give_back(self)


class SessionSlots:
    """How many sessions this process may have open on one master at once.

    Starts at ``mux.max_sessions``. When the server refuses a session anyway
    (its ``MaxSessions`` is lower, or other processes share the master), the
    limit drops to what was open then, so later sessions queue here instead
    of being refused; it creeps back up after a run of successful opens,
    since sshd also refuses briefly while it frees closed sessions.
    """

    #: Successful opens after which a lowered limit goes up by one.
    RECOVER_AFTER = 50

    def __init__(self, limit: int) -> None:
        self.maximum = limit
        self.limit = limit
        self.used = 0
        self._successes = 0
        self._changed = threading.Condition()

    def take(self, timeout: float | None) -> Slot | None:
        """A slot, or None if none came free within ``timeout`` seconds."""
        with self._changed:
            if not self._changed.wait_for(lambda: self.used < self.limit, timeout):
                return None
            self.used += 1
            return Slot(self)

    def _give_back(self, slot: Slot) -> None:
        with self._changed:
            if slot.held:
                slot.held = False
                self.used -= 1
                self._changed.notify()

    def refused(self, slot: Slot, timeout: float | None) -> bool:
        """The server refused the session ``slot`` was for.

        The others hold all it allows: lower the limit, give the slot back and
        queue for it again. False (and no slot held) if that took too long.
        """
        with self._changed:
            self._successes = 0
            self.limit = max(1, min(self.limit, self.used - 1))
            if slot.held:
                slot.held = False
                self.used -= 1
                self._changed.notify_all()
            if not self._changed.wait_for(lambda: self.used < self.limit, timeout):
                return False
            self.used += 1
            slot.held = True
            return True

    def opened(self) -> None:
        with self._changed:
            self._successes += 1
            if self.limit < self.maximum and self._successes >= self.RECOVER_AFTER:
                self._successes = 0
                self.limit += 1
                self._changed.notify()
