"""Fabric's ``put`` in one session: the local file's own descriptor is the
remote ``cat``'s stdin, a file-like object's bytes are pumped (see
:mod:`fabric_mux.transfer`); they land beside the target, which changes only
once all of them came (see :data:`PUT_SCRIPT`)."""

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
#: empty, $4 the size to expect. The bytes come on stdin, never in the command line:
#: a remote process's arguments are there for every user of the server to read (ps,
#: /proc).
#:
#: The bytes land in a private folder beside the target (``.fabric-mux-`` and a
#: random word from ``mktemp -d``, or from /dev/urandom where there is no mktemp:
#: never a name the command line gives away), in a file made 0600 there. The script
#: works inside that folder, by relative names, once it has checked that it is a new,
#: empty folder of its own that nobody else may enter: another user who can write the
#: target's folder may rename the landing folder or put a link in its place, but
#: cannot reach what the script opens, nor have it follow their link. The bytes count
#: as sent only at the size expected: a put that breaks off (the connection lost,
#: Ctrl-C) ends its stdin as a whole one does, and leaves the old file as it was; the
#: landing folder goes, whether the script exits or is ended (a hang-up, SIGTERM, a
#: closed stderr). Then a new file takes the target's place; an old file gets the
#: bytes copied in, and so keeps its inode: owner, group, mode, ACLs, extended
#: attributes and hard links. That copy is not ended by a signal; if it fails (out of
#: room), the landing file is kept and named. Where no landing folder can be made (a
#: folder we may not write) or the target is no regular file (a fifo, a device), the
#: bytes go straight in, as SFTP writes them. A new file is then given $3 or, as SFTP
#: gives a new file, 0666 less the umask (chmod's ``=rw`` with no "who" is masked by
#: it). Reports the absolute path, then wc's count of what landed.
#:
#: An old regular file is opened once, as fd 3, before anything shows in its folder
#: (as SFTP opens it once): on Linux the copy-in, the mode and the count then go
#: through /proc/self/fd/3, which names that open file and no path, so that another
#: user who may write the folder cannot, by renaming the target or putting a link in
#: its place meanwhile, have the bytes written into or a mode set on a file of their
#: choosing. Where there is no such /proc (BSD, macOS), they go by the name, as
#: SFTP's write and chmod do. (``command exec``: a redirection that fails ends no
#: shell, and says why, naming the target.)
PUT_SCRIPT = r"""printf '\0fabric-mux-started' >&2
r=$1
if [ -z "$r" ]; then r=$2
elif [ -d "$r" ]; then
  [ -n "$2" ] || { printf '\0fabric-mux-folder' >&2; exit 1; }
  case $2 in /*) r=$2 ;; *) r=${r%/}/$2 ;; esac
fi
case $r in /*) ;; *) cd -P . && r=$PWD/$r ;; esac
n=; [ -e "$r" ] || [ -h "$r" ] || n=1
d= i= t=$r
trap '{ [ -z "$i" ] || rm -f f; [ -z "$d" ] || rmdir -- "$d"; } 2>/dev/null' EXIT
trap 'exit 1' HUP INT TERM PIPE
if [ -n "$n" ] || { [ -f "$r" ] && command exec 3>>"$r"; }; then
  [ -n "$n" ] || ! [ -h /proc/self/fd/3 ] || t=/proc/self/fd/3
  p=${r%/*}/.fabric-mux-
  d=$(mktemp -d "${p}XXXXXXXXXX" 2>/dev/null) || {
    w=$(od -An -N8 -tx1 /dev/urandom | tr -dc 0-9a-f) && [ ${#w} -eq 16 ] &&
      { d=$p$w; mkdir -m 700 -- "$d" || d=; }
  } 2>/dev/null
  if [ -n "$d" ] && cd -P "$d" 2>/dev/null && [ -O . ] && [ -z "$(ls -A)" ] &&
    case $(ls -ld .) in d???--[-S]---*) ;; *) false ;; esac &&
    (set -C && umask 077 && : > f) 2>/dev/null; then i=1
  elif [ -n "$d" ]; then rmdir -- "$d" 2>/dev/null; d=
  fi
elif [ -f "$r" ]; then exit 1
fi
if [ -z "$i" ]; then
  (umask 077 && exec cat > "$t") || exit
else
  cat > f || exit
  s=$(wc -c < f) || exit
  [ $s -eq "$4" ] || { printf '\0fabric-mux-short %s\0' $s >&2; exit 1; }
  if [ -n "$n" ]; then
    chmod "${3:-=rw}" f && mv -f f "$r" || exit
  else
    trap - EXIT
    trap '' HUP INT TERM PIPE
    cat f > "$t" || { printf '\0fabric-mux-kept %s\0' "$d/f" >&2; exit 1; }
    rm -f f
  fi
  rmdir -- "$d" 2>/dev/null
  trap - EXIT HUP INT TERM PIPE
fi
if [ -z "$n" ]; then [ -z "$3" ] || chmod "$3" -- "$t" || exit
elif [ -z "$i" ]; then chmod "${3:-=rw}" -- "$r" || exit
fi
printf '\0fabric-mux %s\0' "$r" >&2
exec wc -c < "$t" >&2"""


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

    def command(size: int) -> str:
        return command_line(PUT_SCRIPT, str(remote or ""), local_base, mode, str(size))

    with ExitStack() as stack:
        if is_file_like:
            pointer = local.tell()
            stack.callback(local.seek, pointer)
            source = FileLikeSource.of(local, stack)
            report, sent = run(opener, command(source.size), source=source, progress=report_to)
            if report_to:
                report_to(sent, sent)
        else:
            where = stack.enter_context(open(local_path, "rb")).fileno()
            sent = os.fstat(where).st_size
            with polling(report_to, sent, lambda: os.lseek(where, 0, os.SEEK_CUR)):
                report, _ = run(opener, command(sent), stdin=where)
    if not report.started:
        raise TransferNeedsSftp(report.errors)
    if report.into_folder:
        raise ValueError(
            "Can't put a file-like-object into a directory unless it has a non-empty "
            ".name attribute!"
        )
    if report.short is not None:  # it broke off, or the file changed as it went
        raise OSError(f"size mismatch in put!  {report.short} != {sent}")
    if report.kept:
        report.errors += f" (the bytes sent are whole in {report.kept})"
    # The script works on an old target through its open descriptor: its tools' words
    # name that, where the user named a path.
    report.errors = report.errors.replace("/proc/self/fd/3", str(remote or local_base))
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
