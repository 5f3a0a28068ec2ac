"""``inv bench`` section i: a command printing 100 MiB, captured."""

from __future__ import annotations

from invoke.watchers import Responder

from .common import (
    timed,
)
from .core import Bench
from .model import Check, Section, Variant

#: Section i: bytes of output a run captures.
CAPTURE = 100 * 2**20


def run(bench: Bench, repeat: int) -> tuple[list[Section], list[Check]]:
    mux = bench.warm_mux
    command = f"head -c {CAPTURE} /dev/zero | tr '\\0' x"

    def capture(**kwargs: object) -> float:
        seconds = timed(lambda: mux.run(command, hide=True, **kwargs))
        return seconds

    variants = [
        Variant("fabric-mux `c.run`, hidden, no watchers", capture),
        Variant(
            "fabric-mux `c.run`, hidden, with a `Responder` (as sudo has)",
            lambda: capture(watchers=[Responder(pattern=r"\[sudo\] password: ", response="x\n")]),
        ),
    ]
    title = f"i. a command printing {CAPTURE // 2**20} MiB, captured"
    section = Section("i", title, variants, size=CAPTURE)
    bench.measure(section, max(1, repeat // 2))
    section.notes.append(
        "i. invoke's own Runner joins the whole buffer for every chunk: 100 MB took"
        " about 70 s through it before fabric-mux replaced that step"
    )
    return [section], []
