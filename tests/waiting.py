"""Polling with a deadline, which every test waits with instead of a fixed sleep (a loaded machine is slow)."""
from __future__ import annotations

import asyncio
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


async def until(pred, timeout: float, what: str = "condition", every: float = 0.1) -> None:
    """wait_until for asyncio tests (the fleet simulator's locks run in the same loop): pred() true, or an
    AssertionError naming `what` once `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(every)
