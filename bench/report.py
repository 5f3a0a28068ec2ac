"""The Markdown report of a bench run."""

from __future__ import annotations

import functools
import platform
import subprocess
import time
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path

import fabric_mux
from fabric_mux.testing import SshServer

from .model import Check, Section, Variant

__all__ = ["machine", "report", "software"]


def report(
    command: str,
    rtt_ms: float,
    load: tuple[float, float],
    server: SshServer,
    sections: Sequence[Section],
    checks: Sequence[Check],
) -> str:
    link = (
        f"through a relay adding {rtt_ms / 2:g} ms each way ({rtt_ms:g} ms round trip,"
        " `fabric_mux.testing.LatencyRelay`)"
        if rtt_ms
        else "over loopback"
    )
    lines = [
        f"## fabric-mux benchmark, {f'{rtt_ms:g} ms round trip' if rtt_ms else 'loopback'}",
        "",
        f"- Link: {link}",
        f"- Machine: {machine()}",
        f"- Software: {software()}",
        f"- Server: a throwaway sshd on 127.0.0.1 (`fabric_mux.testing.ssh_server`),"
        f" logging in as `{server.user}` (bash with a light start-up)",
        f"- Method: `{command}`, {time.strftime('%Y-%m-%d %H:%M %Z')}; medians of n"
        " interleaved rounds; logins counted in sshd's log, per sample; fabric_mux"
        " byte-compiled first, as an install leaves it; load average"
        f" {load[0]:.2f} at the start, {load[1]:.2f} at the end",
        "",
        "| test | variant | median | range | n | logins/sample |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for section in sections:
        for index, variant in enumerate(section.variants):
            title = section.title if index == 0 else ""
            lines.append(
                f"| {title} | {variant.label} | {_median(section, variant)}"
                f" | {_range(section, variant)} | {len(variant.samples)} | {_logins(variant)} |"
            )
    lines += ["", "| ratio (of median times) | value | promise |", "| --- | ---: | --- |"]
    for check in checks:
        value = check.value
        shown = "n/a" if value is None else f"{value:.2f}x"
        verdict = ""
        if check.holds is not None:
            held = value is not None and check.holds(value)
            verdict = f"{check.promise}: {'holds' if held else '**does not hold**'}"
        lines.append(f"| {check.label} | {shown} | {verdict} |")
    notes = [note for section in sections for note in section.notes]
    if notes:
        lines += ["", *(f"- {note}" for note in notes)]
    return "\n".join(lines) + "\n"


def _median(section: Section, variant: Variant) -> str:
    median = variant.median
    if median is None:
        return "n/a"
    return f"{_number(section, median)} {'MB/s' if section.size else 'ms'}"


def _range(section: Section, variant: Variant) -> str:
    """Lowest to highest sample, in the median's unit: how much the machine wobbled."""
    if not variant.samples:
        return ""
    fast, slow = min(variant.samples), max(variant.samples)
    low, high = (slow, fast) if section.size else (fast, slow)
    return f"{_number(section, low)}..{_number(section, high)}"


def _number(section: Section, seconds: float) -> str:
    if section.size:
        return f"{section.size / seconds / 10**6:.0f}"
    ms = seconds * 1000
    return f"{ms:.2f}" if ms < 10 else f"{ms:.1f}" if ms < 100 else f"{ms:.0f}"


def _logins(variant: Variant) -> str:
    if not variant.samples:
        return "-"
    per = variant.logins / len(variant.samples)
    return f"{per:g}" if per == int(per) else f"{per:.2f}"


def _output(argv: list[str]) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    except OSError:
        return "?"
    return (proc.stdout or proc.stderr).strip() or "?"


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{_output(['uname', '-srm'])}, {cpu}, {_output(['nproc'])} CPUs"


@functools.lru_cache(maxsize=1)
def commit() -> str:
    """The commit measured (``-dirty`` if the work tree has changes), as it was when
    first asked: a bench asks at its start."""
    repo = Path(__file__).resolve().parent.parent
    return _output(["git", "-C", str(repo), "describe", "--always", "--dirty"])


def software() -> str:
    return ", ".join(
        [
            _output(["ssh", "-V"]),
            f"Python {platform.python_version()}",
            *(f"{name} {version(name)}" for name in ("fabric", "paramiko", "invoke")),
            f"fabric-mux {fabric_mux.__version__} ({commit()})",
        ]
    )
