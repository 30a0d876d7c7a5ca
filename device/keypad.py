"""4x3 matrix keypad driver. Takes pin objects; scan() is called from a periodic timer (every SCAN_MS) and
never allocates: it drives one row low at a time, reads the columns (pull-ups, pressed = 0), debounces,
and pushes each debounced press as a key byte into a preallocated ring buffer that the main loop drains
with pop(). A press is emitted once, when it has been stable for 4 scans; the key must then be seen
released (stable) before it can be emitted again. Two or more keys down at once are ignored (ghosting)."""
from micropython import const

SCAN_MS = const(5)
_DEBOUNCE = const(4)      # scans: 20 ms stable
_RING = const(32)
_NONE = const(-1)
_MANY = const(-2)


class Keypad:
    def __init__(self, rows, cols, keymap: bytes = b"123456789*0#") -> None:
        self.rows = rows
        self.cols = cols
        self.ncols = len(cols)
        self.keymap = keymap
        self.buf = bytearray(_RING)  # the ring; buf and head are names the interpreter has built in (no heap)
        self.head = 0   # written by scan() only
        self._tail = 0   # written by pop() only
        self._raw = _NONE
        self._same = 0
        self._down = _NONE
        self.overflows = 0
        for r in rows:
            r.value(1)

    def scan(self) -> None:
        found = _NONE
        nc = self.ncols
        cols = self.cols
        i = 0
        for r in self.rows:
            r.value(0)
            for c in cols:
                if c.value() == 0:
                    found = i if found == _NONE else _MANY
                i += 1
            r.value(1)
        if found == _MANY:
            return
        if found != self._raw:
            self._raw = found
            self._same = 1
            return
        if self._same < _DEBOUNCE:
            self._same += 1
            if self._same == _DEBOUNCE:
                if found == _NONE:
                    self._down = _NONE
                elif found != self._down:
                    self._down = found
                    self._push(self.keymap[found])

    def _push(self, key: int) -> None:
        h = self.head
        n = (h + 1) % _RING
        if n == self._tail:
            self.overflows += 1
            return
        self.buf[h] = key
        self.head = n

    def pop(self) -> int:
        """The next key byte, or -1 when none is waiting."""
        t = self._tail
        if t == self.head:
            return -1
        k = self.buf[t]
        self._tail = (t + 1) % _RING
        return k

    def pending(self) -> bool:
        return self._tail != self.head or self._raw != _NONE
