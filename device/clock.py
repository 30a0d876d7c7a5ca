"""Trusted wall-clock time. Pure logic: epoch seconds are anchored to a ticks_ms value, and rebased in poll()
so the ticks difference never approaches the ESP32 ticks period (2**30 ms).

Untrusted until set() succeeds (signed server time, NTP, or a DS3231 whose oscillator never stopped).
set() refuses a time earlier than the last known good time (persisted by the owner of this object)."""
from time import ticks_add, ticks_diff


class TrustedClock:
    def __init__(self, last_good: int = 0) -> None:
        self.last_good = last_good
        self.source = None  # type: str | None
        self._epoch = None  # type: int | None
        self._ms = 0

    @property
    def trusted(self) -> bool:
        return self._epoch is not None

    def now(self, now_ms):
        e = self._epoch
        if e is None:
            return None
        t = e + ticks_diff(now_ms, self._ms) // 1000
        if t > self.last_good:
            self.last_good = t
        return t

    def set(self, epoch: int, now_ms, source: str) -> bool:
        epoch = int(epoch)
        if epoch < self.last_good or epoch <= 0:
            return False
        self._epoch = epoch
        self._ms = now_ms
        self.source = source
        self.last_good = epoch
        return True

    def poll(self, now_ms) -> None:
        if self._epoch is None:
            return
        d = ticks_diff(now_ms, self._ms)
        if d >= 60000:
            s = d // 1000
            self._epoch += s
            self._ms = ticks_add(self._ms, s * 1000)  # type: ignore
