"""``put`` and ``get`` in one session each, with Fabric's semantics.

One remote ``/bin/sh`` command does the whole transfer: it resolves the path
(relative to the remote home, a folder target gets the file's name), moves the
bytes, sets the mode, and reports on stderr, after a NUL, the size and the
absolute path that Fabric's ``Result`` and the size check need. So a transfer
costs one session and one session slot (a get about two round trips, a put
three: OpenSSH sends a session's stdin only once the command has started),
where SFTP cost a session, a stat, the data, a stat and a chmod.

No byte of a file ever travels in a command line or an environment variable:
the server shows every process's arguments to all of its users. A real local
file's own descriptor is the session's stdin (put) or stdout (get): its bytes
never pass through Python. File-like objects are pumped. A get into a file
lands where :mod:`~fabric_mux.landing` says: a new private file that takes
the old one's place once whole, or, where a new file could not keep what the
old one had, the old file itself.

What the account's login shell prints to the same stdout (before the command,
after it, or among the bytes from a job it left in the background) is told
apart, in the same session, by a random marker that the get's command prints
(see :mod:`~fabric_mux.marked`): a get never succeeds with bytes that are not
the file's. The size asked again after reading catches a file that changed.
Where the account has no shell to run the command (``ForceCommand
internal-sftp``), :class:`~fabric_mux.exceptions.TransferNeedsSftp` says so,
and the connection lets SFTP do it.
"""

from __future__ import annotations

from .getting import get
from .progress import ProgressBar, progress_callback
from .putting import put
from .transfersession import remote_home

__all__ = ["ProgressBar", "get", "progress_callback", "put", "remote_home"]
