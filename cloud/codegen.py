"""4-digit codes and backup keys: random from `secrets`, never trivial, never colliding."""
from __future__ import annotations

import secrets

DIGITS = 4


def is_trivial(code: str) -> bool:
    """Codes a stranger would try first: one repeated digit (0000, 7777), a straight run up or down
    (0123, 1234, 6789, 9876, 3210) and two alternating digits (1212, 9090)."""
    if len(code) != DIGITS or not code.isdigit():
        return True
    d = [int(c) for c in code]
    steps = {d[i + 1] - d[i] for i in range(DIGITS - 1)}
    if steps in ({0}, {1}, {-1}):
        return True
    if d[0] == d[2] and d[1] == d[3]:
        return True
    return False


ALLOWED: tuple[str, ...] = tuple(c for c in (f"{n:04d}" for n in range(10 ** DIGITS)) if not is_trivial(c))


class CodeSpaceExhausted(Exception):
    """Every non-trivial code is taken by an overlapping window (needs ~9,900 overlapping codes)."""


def pick(taken: set[str]) -> str:
    """A uniformly random allowed code that is not in `taken`."""
    # Rejection sampling is O(1) while the space is mostly free; fall back to an exact choice when crowded.
    if len(taken) < len(ALLOWED) // 2:
        while True:
            c = ALLOWED[secrets.randbelow(len(ALLOWED))]
            if c not in taken:
                return c
    free = [c for c in ALLOWED if c not in taken]
    if not free:
        raise CodeSpaceExhausted("no free code for this period")
    return secrets.choice(free)
