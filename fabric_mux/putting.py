"""Fabric's ``put`` in one session: the local file's own descriptor is the
remote ``cat``'s stdin, a file-like object's bytes are pumped (see
:mod:`fabric_mux.transfer`)."""

from __future__ import annotations

import os
import stat
from contextlib import ExitStack
from typing import Any

from fabric.transfer import Result

from .exceptions import TransferNeedsSftp
from .progress import polling, progress_callback
from .transfersession import FileLikeSource, Transferring, check, command_line, run

__all__ = ["PUT_SCRIPT", "put"]

#: $1 the remote path as given (may be empty), $2 the local name (joined to a
#: folder as posixpath.join joins, as Fabric does: an absolute name wins), $3 the mode or
#: empty. The bytes come on stdin, never in the command line: a remote process's
#: arguments are there for every user of the server to read (ps, /proc).
#: A new file is made 0600 (nobody else reads it while it fills), then given $3, or,
#: as SFTP gives a new file, 0666 less the umask (chmod's ``=rw`` with no "who" is
#: masked by it). Reports the absolute path, then wc's count of what landed.
PUT_SCRIPT = r"""printf '\0fabric-mux-started' >&2
r=$1
if [ -z "$r" ]; then r=$2
elif [ -d "$r" ]; then
  [ -n "$2" ] || { printf '\0fabric-mux-folder' >&2; exit 1; }
  case $2 in /*) r=$2 ;; *) r=${r%/}/$2 ;; esac
fi
case $r in /*) ;; *) cd -P . && r=$PWD/$r ;; esac
n=; [ -e "$r" ] || n=1
(umask 077 && exec cat > "$r") || exit
if [ -n "$3" ]; then chmod "$3" -- "$r" || exit
elif [ -n "$n" ]; then chmod =rw -- "$r" || exit
fi
printf '\0fabric-mux %s\0' "$r" >&2
exec wc -c < "$r" >&2"""


def put(
    opener: Transferring,
    local: Any,
    remote: Any = None,
    preserve_mode: bool = True,
    progress: Any = None,
) -> Result:
    """Fabric's ``Transfer.put``, in one session; see the module's notes."""
    if not local:
        raise ValueError("Local path must not be empty!")
    is_file_like = hasattr(local, "write") and callable(local.write)
    if is_file_like:
        local_base = getattr(local, "name", None) or ""
        if not isinstance(local_base, str):
            local_base = ""
        if not remote:
            raise ValueError("Must give non-empty remote path when local is a file-like object!")
        local_path = local
    else:
        local_base = os.path.basename(local)
        local_path = os.path.abspath(local)
    mode = ""
    if preserve_mode and not is_file_like:
        mode = f"{stat.S_IMODE(os.stat(local_path).st_mode):o}"
    report_to = progress_callback(progress, local_base or "upload")

    command = command_line(PUT_SCRIPT, str(remote or ""), local_base, mode)
    with ExitStack() as stack:
        if is_file_like:
            pointer = local.tell()
            stack.callback(local.seek, pointer)
            local.seek(0)
            report, sent = run(opener, command, source=FileLikeSource(local), progress=report_to)
            if report_to:
                report_to(sent, sent)
        else:
            where = stack.enter_context(open(local_path, "rb")).fileno()
            sent = os.fstat(where).st_size
            with polling(report_to, sent, lambda: os.lseek(where, 0, os.SEEK_CUR)):
                report, _ = run(opener, command, stdin=where)
    if not report.started:
        raise TransferNeedsSftp(report.errors)
    if report.into_folder:
        raise ValueError(
            "Can't put a file-like-object into a directory unless it has a non-empty "
            ".name attribute!"
        )
    check(opener.original_host, report, str(remote or local_base))
    if report.size != sent:
        raise OSError(f"size mismatch in put!  {report.size} != {sent}")
    return Result(
        orig_remote=remote,
        remote=report.path,
        orig_local=local,
        local=local_path,
        connection=opener,
    )
