"""Retry timing for the link's reconnects and rotation requests: full jitter under a doubling ceiling, so locks
that failed together (a broker restart) do not come back together."""
import os


def jitter(cap_ms: int) -> int:
    """A uniform wait in [0, cap_ms] (24 random bits: fine-grained enough for an hour)."""
    r = os.urandom(3)
    return ((r[0] << 16 | r[1] << 8 | r[2]) * (cap_ms + 1)) >> 24


def ceiling(failures: int, first_ms: int, max_ms: int) -> int:
    """The wait's ceiling after `failures` failures in a row: first_ms doubling up to max_ms."""
    if failures < 1:
        return 0
    c = first_ms
    while failures > 1 and c < max_ms:
        c *= 2
        failures -= 1
    return min(c, max_ms)
