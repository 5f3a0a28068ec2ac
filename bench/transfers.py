"""``inv bench`` section e: bulk transfers: 128 MB put and get."""

from __future__ import annotations

import os
import shlex
import shutil
from collections.abc import Callable
from pathlib import Path

from .common import (
    remote_folder,
    run_quiet,
    scratch,
    timed,
)
from .core import Bench, which
from .model import Check, Section, Variant

SIZE = 128 * 10**6


def run(bench: Bench, repeat: int) -> tuple[list[Section], list[Check]]:
    stock, mux, path = bench.warm_stock, bench.warm_mux, bench.control_path
    local = scratch(bench.stack, "fmb-xfer-")
    payload = local / "payload.bin"
    _write_random(payload, SIZE)
    remote = remote_folder(bench.server, "xfer")
    source = remote / "source.bin"
    shutil.copyfile(payload, source)
    shutil.chown(source, bench.server.user)
    uploaded = remote / "up.bin"
    downloaded = local / "down.bin"
    put_batch = local / "put.batch"
    put_batch.write_text(f'put "{payload}" "{uploaded}"\n')
    get_batch = local / "get.batch"
    get_batch.write_text(f'get "{source}" "{downloaded}"\n')
    sftp = [which("sftp"), "-F", bench.cfg, "-o", f"ControlPath={path}", "-b"]
    ssh_s = [bench.ssh, "-F", bench.cfg, "-S", path, bench.alias]

    def put(action: Callable[[], object]) -> Callable[[], float]:
        def measure() -> float:
            uploaded.unlink(missing_ok=True)
            # Last round's dirty pages would be written out during this one.
            os.sync()
            seconds = timed(action)
            _check_size(uploaded)
            return seconds

        return measure

    def get(action: Callable[[], object]) -> Callable[[], float]:
        def measure() -> float:
            downloaded.unlink(missing_ok=True)
            os.sync()
            seconds = timed(action)
            _check_size(downloaded)
            return seconds

        return measure

    def cat_up() -> None:
        with payload.open("rb") as stdin:
            run_quiet([*ssh_s, f"cat > {shlex.quote(str(uploaded))}"], stdin=stdin)

    def cat_down() -> None:
        with downloaded.open("wb") as stdout:
            run_quiet([*ssh_s, f"cat {shlex.quote(str(source))}"], stdout=stdout)

    puts = [
        Variant("stock Fabric `c.put`", put(lambda: stock.put(str(payload), str(uploaded)))),
        Variant("fabric-mux `c.put`", put(lambda: mux.put(str(payload), str(uploaded)))),
        Variant(
            "OpenSSH `sftp -b` through the master",
            put(lambda: run_quiet([*sftp, str(put_batch), bench.alias])),
        ),
        Variant("ceiling: `ssh -S path alias 'cat > f'` < file", put(cat_up)),
    ]
    gets = [
        Variant("stock Fabric `c.get`", get(lambda: stock.get(str(source), str(downloaded)))),
        Variant("fabric-mux `c.get`", get(lambda: mux.get(str(source), str(downloaded)))),
        Variant(
            "OpenSSH `sftp -b` through the master",
            get(lambda: run_quiet([*sftp, str(get_batch), bench.alias])),
        ),
        Variant("ceiling: `ssh -S path alias 'cat f'` > file", get(cat_down)),
    ]
    megabytes = SIZE // 10**6
    sections = [
        Section("e", f"e. put of a {megabytes} MB file", puts, size=SIZE),
        Section("e", f"e. get of a {megabytes} MB file", gets, size=SIZE),
    ]
    checks: list[Check] = []
    for section in sections:
        bench.measure(section, repeat)
        s, m, o, c = section.variants
        verb = section.title.split()[1]
        checks += [
            Check(f"e. {verb}: mux speed ÷ stock", s, m),
            Check(f"e. {verb}: mux speed ÷ OpenSSH sftp", o, m, "≥ 1", lambda v: v >= 1.0),
            Check(f"e. {verb}: mux speed ÷ ceiling", c, m),
        ]
    for path_ in (payload, source, uploaded, downloaded):
        path_.unlink(missing_ok=True)
    return sections, checks


def _write_random(path: Path, size: int) -> None:
    chunk = 10**6
    with path.open("wb") as file:
        for offset in range(0, size, chunk):
            file.write(os.urandom(min(chunk, size - offset)))


def _check_size(path: Path) -> None:
    size = path.stat().st_size if path.exists() else None
    if size != SIZE:
        raise RuntimeError(f"{path} holds {size} bytes after the transfer, not {SIZE}")
