"""The benchmark and the demo behind ``inv bench`` and ``inv demo`` (not installed)."""
