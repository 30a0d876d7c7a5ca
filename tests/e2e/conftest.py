"""Fixtures for the end-to-end suite; the machinery lives in e2e_stack.py."""
from __future__ import annotations

import os

import pytest

from e2e_stack import Stack, mosquitto_available


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    if not mosquitto_available():
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    with Stack(tmp_path_factory.mktemp("e2e")).running() as s:
        yield s
    for p in s.procs:
        if p.p is not None and p.p.returncode not in (0, -15, None):
            print(f"--- {p.name} exited {p.p.returncode} ---\n{p.tail()}")


@pytest.fixture
def env():
    """The environment a simulated lock of these tests runs in: this one, without a SIMLOCK_DIR of the caller's."""
    if not mosquitto_available():
        pytest.skip("mosquitto is not installed")
    e = dict(os.environ)
    e.pop("SIMLOCK_DIR", None)
    return e
