"""Wrong-entry lockout: after 5 refused entries in a row the keypad refuses everything for 30 s, doubling with
each further one up to 15 minutes; from the 12th in a row, 30 minutes (the guessing budget this gives is in
docs/security.md). Pure logic; times are ticks_ms values passed in."""
from micropython import const
from time import ticks_add, ticks_diff

_FREE_TRIES = const(5)
_BASE_S = const(30)
_CAP_S = const(900)
_GUESSING_AFTER = const(12)  # this many refused entries in a row is someone guessing, not mistyping
_GUESSING_S = const(1800)


def duration_for(fails: int) -> int:
    """Lockout seconds after the fails-th refused entry in a row (0 = none)."""
    if fails < _FREE_TRIES:
        return 0
    if fails >= _GUESSING_AFTER:
        return _GUESSING_S
    d = _BASE_S
    for _ in range(fails - _FREE_TRIES):
        d *= 2
        if d >= _CAP_S:
            return _CAP_S
    return d


class Lockout:
    def __init__(self) -> None:
        self.fails = 0
        self.duration_s = 0  # of the lockout in force (or last one), 0 = none
        self._until = 0
        self.active = False

    def remaining_ms(self, now_ms) -> int:
        if not self.active:
            return 0
        r = ticks_diff(self._until, now_ms)
        if r <= 0:
            self.active = False
            return 0
        return r

    def start(self, now_ms, seconds: int) -> None:
        self.duration_s = seconds
        self._until = ticks_add(now_ms, seconds * 1000)
        self.active = seconds > 0

    def failure(self, now_ms) -> int:
        """Count a refused entry; returns the lockout seconds started by it (0 = none)."""
        self.fails += 1
        d = duration_for(self.fails)
        if d:
            self.start(now_ms, d)
        return d

    def success(self) -> None:
        self.fails = 0
        self.active = False
        self.duration_s = 0
