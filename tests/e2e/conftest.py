"""Fixtures for the end-to-end suite; the machinery lives in e2e_stack.py."""
from __future__ import annotations

import pytest

from e2e_stack import Stack, mosquitto_available


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    if not mosquitto_available():
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    s = Stack(tmp_path_factory.mktemp("e2e"))
    try:
        s.start()
    except BaseException:
        for p in s.procs:
            print(f"--- {p.name} ---\n{p.tail()}")
        s.stop()
        raise
    yield s
    s.stop()
    for p in s.procs:
        if p.p is not None and p.p.returncode not in (0, -15, None):
            print(f"--- {p.name} exited {p.p.returncode} ---\n{p.tail()}")
