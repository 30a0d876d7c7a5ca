"""The code being typed at the keypad: digits into a buffer reserved at boot (no allocation on the keypad's
path), cleared once submitted, on `*`, or after a pause longer than the entry timeout."""
from time import ticks_diff



class Entry:
    # (few names: each one a module adds is heap on the board, docs/firmware.md)
    def __init__(self, n: int, timeout_ms: int) -> None:
        self.buf = bytearray(n)  # the code's length is len(buf)
        self.n = 0  # digits typed so far
        self.timeout = timeout_ms
        self.last = 0  # ticks of the last digit

    def digit(self, k: int, now: int) -> bool:
        """Add a digit (beyond the code's length it is ignored); True once the code is complete."""
        self.last = now
        b = self.buf
        if self.n < len(b):
            b[self.n] = k
            self.n += 1
        return self.n >= len(b)

    def expired(self, now: int) -> bool:
        return self.n > 0 and ticks_diff(now, self.last) >= self.timeout

    def clear(self) -> None:
        b = self.buf
        for i in range(len(b)):
            b[i] = 0
        self.n = 0
