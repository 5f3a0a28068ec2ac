"""Support for the project's own suite, bench and demo (not shipped)."""
