"""``inv bench`` section g: small transfers at the round-trip floor."""

from __future__ import annotations

import io
import os

from fabric import Connection

from .common import (
    protocol_session,
    scratch,
    timed,
)
from .core import Bench
from .model import Check, Section, Variant

#: Section g: the small transfers' size.
SMALL = 10_000


def run(bench: Bench, repeat: int) -> tuple[list[Section], list[Check]]:
    stock, mux, path = bench.warm_stock, bench.warm_mux, bench.control_path
    local = scratch(bench.stack, "fmb-small-")
    payload = local / "small.bin"
    payload.write_bytes(os.urandom(SMALL))
    back = local / "back.bin"
    remote = f"fmux-bench-small-{os.getpid()}.bin"
    mux.put(str(payload), remote)  # the file the gets fetch
    bench.stack.callback(lambda: mux.run(f"rm -f {remote}", hide=True, warn=True))

    def putfo(connection: Connection) -> float:
        data = io.BytesIO(payload.read_bytes())
        return timed(lambda: connection.put(data, remote))

    def put(connection: Connection) -> float:
        return timed(lambda: connection.put(str(payload), remote))

    def get(connection: Connection) -> float:
        return timed(lambda: connection.get(remote, str(back)))

    def getfo(connection: Connection) -> float:
        return timed(lambda: connection.get(remote, io.BytesIO()))

    variants = [
        Variant(
            "bare protocol session (`MuxClient`): the floor",
            lambda: timed(lambda: protocol_session(path, "true")),
        ),
        Variant("stock Fabric `c.put` of a file", lambda: put(stock)),
        Variant("fabric-mux `c.put` of a file", lambda: put(mux)),
        Variant("stock Fabric `c.get` to a file", lambda: get(stock)),
        Variant("fabric-mux `c.get` to a file", lambda: get(mux)),
        Variant("stock Fabric `c.put` of a `BytesIO`", lambda: putfo(stock)),
        Variant("fabric-mux `c.put` of a `BytesIO`", lambda: putfo(mux)),
        Variant("stock Fabric `c.get` into a `BytesIO`", lambda: getfo(stock)),
        Variant("fabric-mux `c.get` into a `BytesIO`", lambda: getfo(mux)),
    ]
    title = f"g. warm transfers of {SMALL // 1000} KB: round trips, not bandwidth"
    section = Section("g", title, variants)
    bench.measure(section, repeat * 3, warmup=1)
    floor, sp, mp, sg, mg, sf, mf, sgf, mgf = variants
    promise = ("≤ 1.5", lambda v: v <= 1.5) if bench.rtt_ms else ("", None)
    # A put's bytes go on stdin, which OpenSSH sends once the command has started:
    # three round trips to the bare session's two.
    put_promise = ("≤ 1.75", lambda v: v <= 1.75) if bench.rtt_ms else ("", None)
    return [section], [
        Check("g. mux put ÷ bare session", mp, floor, *put_promise),
        Check("g. mux get ÷ bare session", mg, floor, *promise),
        Check("g. mux put of a BytesIO ÷ bare session", mf, floor, *put_promise),
        Check("g. mux get into a BytesIO ÷ bare session", mgf, floor, *promise),
        Check("g. stock put ÷ mux put", sp, mp),
        Check("g. stock get ÷ mux get", sg, mg),
        Check("g. stock put of a BytesIO ÷ mux's", sf, mf),
        Check("g. stock get into a BytesIO ÷ mux's", sgf, mgf),
    ]
