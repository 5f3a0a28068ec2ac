"""The private upstream names fabric-mux relies on are still there (see upstream.py)."""

from __future__ import annotations

import importlib

import fabric
import pytest
from invoke.context import Context
from invoke.runners import Runner

from fabric_mux.upstream import INSTANCE_ATTRIBUTES, RELIED_ON


@pytest.mark.parametrize(("module", "cls", "name", "why"), RELIED_ON, ids=str)
def test_each_private_name_relied_on_still_exists(
    module: str, cls: str, name: str, why: str
) -> None:
    owner = getattr(importlib.import_module(module), cls)
    if name in INSTANCE_ATTRIBUTES:
        instance = Runner(Context()) if cls == "Runner" else fabric.Config()
        found = hasattr(instance, name)
    else:
        found = hasattr(owner, name)
    assert found, f"{module}.{cls}.{name} is gone; fabric-mux uses it to {why}"
