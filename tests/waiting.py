"""Polling with a deadline, which every test waits with instead of a fixed sleep (a loaded machine is slow)."""
from __future__ import annotations

import time


def wait_until(pred, timeout: float, what: str = "condition", every: float = 0.05):
    """pred()'s first truthy value; AssertionError naming `what` once `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)
