"""The uplink counter (docs/protocol.md, Freshness): strictly increasing across reboots, with a high-water mark
persisted every _STEP values so a counter costs one flash write per _STEP messages, not one per message."""
import store

LINK_FILE = "link.bin"
_STEP = 64


class UpCounter:
    def __init__(self) -> None:
        hi = 1
        data = store.load(LINK_FILE)
        if data is not None and len(data) == 8:
            hi = 0
            for b in bytes(data):
                hi = (hi << 8) | b
            if hi < 1:
                hi = 1
        # after a reboot continue above the persisted mark: values up to it may have been used
        self.value = hi - 1
        self._hi = hi

    def next(self) -> int:
        n = self.value + 1
        if n >= self._hi:
            hi = n + _STEP
            b = bytearray(8)
            v = hi
            for i in range(7, -1, -1):
                b[i] = v & 0xFF
                v >>= 8
            store.save(LINK_FILE, b)
            self._hi = hi
        self.value = n
        return n
