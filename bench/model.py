"""What a bench section measures and reports: variants, sections, ratio checks."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Check", "Section", "Variant"]


@dataclass
class Variant:
    """One way of doing a section's job, and what measuring it gave."""

    label: str
    #: One sample in seconds; it may do untimed set-up and clean-up around its timer.
    measure: Callable[[], float]
    samples: list[float] = field(default_factory=list)
    logins: int = 0

    @property
    def median(self) -> float | None:
        if not self.samples:
            return None
        return statistics.median(self.samples)


@dataclass
class Section:
    key: str
    title: str
    variants: list[Variant]
    #: Bytes moved a sample: shown as MB/s; 0: shown as a time.
    size: int = 0
    #: Lines for the report's notes, below the ratios.
    notes: list[str] = field(default_factory=list)


@dataclass
class Check:
    """A ratio between two variants' medians, and the promise it is held to."""

    label: str
    numerator: Variant
    denominator: Variant
    promise: str = ""
    holds: Callable[[float], bool] | None = None

    @property
    def value(self) -> float | None:
        top, bottom = self.numerator.median, self.denominator.median
        if top is None or bottom is None:
            return None
        return top / bottom
