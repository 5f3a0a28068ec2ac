"""This release's version, in a module of its own: modules that report it
import it from here, not from the package, which imports them."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.2.0"
