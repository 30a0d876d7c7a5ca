"""Bounded access log: a ring of fixed-size records with a monotonic sequence number that survives reboots.

Record (16 bytes, big endian): seq (u32) | t (u32 epoch, 0xFFFFFFFF = no trusted time) | kind (u16) |
reserved (u16) | detail (u32). When the ring is full the oldest record is dropped and counted in `dropped`.
File payload: next_seq (u32) | count (u16) | dropped (u32) | ring. Pure logic (the owner persists it).
"""
try:
    from micropython import const
except ImportError:
    def const(x):  # type: ignore
        return x

from be32 import put32 as _put32
from be32 import u32 as _u32

REC = const(16)
CAPACITY = const(128)
_NOT = 0xFFFFFFFF
_HEAD = const(10)

BOOT = const(1)
OPENED = const(2)           # detail: code id
OPENED_BACKUP = const(3)
REFUSED = const(4)          # detail: reason (REASONS)
LOCKOUT = const(5)          # detail: seconds
ROTATION_DUE = const(6)
CODESET = const(7)          # detail: revision installed
CODESET_REFUSED = const(8)  # detail: revision refused
TIME_SET = const(9)         # detail: index in SOURCES
TIME_REFUSED = const(10)    # detail: as TIME_SET
BACKUP_FIRST_USE = const(11)
BACKUP_INSTALLED = const(12)
CRASH = const(13)

KINDS = ("", "boot", "opened", "opened_backup", "refused", "lockout", "rotation_due", "codeset",
         "codeset_refused", "time_set", "time_refused", "backup_first_use", "backup_installed", "crash")
# refused reasons
REASONS = ("", "unknown", "outside_window", "no_time", "length")
SOURCES = ("other", "server", "ntp", "rtc", "cloud")


class AccessLog:
    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self.ring = bytearray(capacity * REC)
        self.next_seq = 1
        self.count = 0
        self.dropped = 0

    @property
    def last_seq(self) -> int:
        return self.next_seq - 1

    def append(self, t, kind: int, detail: int = 0) -> int:
        seq = self.next_seq
        o = (seq % self.capacity) * REC
        r = self.ring
        _put32(r, o, seq)
        _put32(r, o + 4, _NOT if t is None else t)
        r[o + 8] = kind >> 8
        r[o + 9] = kind & 0xFF
        r[o + 10] = 0
        r[o + 11] = 0
        _put32(r, o + 12, detail & _NOT)
        self.next_seq = seq + 1
        if self.count < self.capacity:
            self.count += 1
        else:
            self.dropped += 1
        return seq

    def get(self, seq: int):
        """(seq, t, kind, detail) of a held record, or None."""
        if seq < self.next_seq - self.count or seq >= self.next_seq:
            return None
        o = (seq % self.capacity) * REC
        r = self.ring
        t = _u32(r, o + 4)
        return seq, (None if t == _NOT else t), (r[o + 8] << 8) | r[o + 9], _u32(r, o + 12)

    def since(self, seq: int, limit: int):
        """Held records with a sequence number above seq, oldest first, at most limit of them."""
        start = max(seq + 1, self.next_seq - self.count)
        end = min(self.next_seq, start + max(0, limit))
        out = []
        for s in range(start, end):
            out.append(self.get(s))
        return out

    def parts(self):
        head = bytearray(_HEAD)
        _put32(head, 0, self.next_seq)
        head[4] = self.count >> 8
        head[5] = self.count & 0xFF
        _put32(head, 6, self.dropped)
        return head, self.ring

    def restore(self, data) -> bool:
        if data is None or len(data) != _HEAD + len(self.ring):
            return False
        self.next_seq = _u32(data, 0)
        self.count = min((data[4] << 8) | data[5], self.capacity)
        self.dropped = _u32(data, 6)
        self.ring[:] = data[_HEAD:]
        return True


def as_dict(rec) -> dict:
    """The link-facing form of a record: {"seq", "t", "kind", ...details}."""
    seq, t, kind, detail = rec
    name = KINDS[kind] if kind < len(KINDS) else str(kind)
    d = {"seq": seq, "t": t, "kind": name}
    if kind == OPENED:
        d["code_id"] = detail
    elif kind == REFUSED:
        d["reason"] = REASONS[detail] if detail < len(REASONS) else str(detail)
    elif kind == LOCKOUT:
        d["seconds"] = detail
    elif kind in (CODESET, CODESET_REFUSED):
        d["revision"] = detail
    elif kind in (TIME_SET, TIME_REFUSED):
        d["source"] = SOURCES[detail] if detail < len(SOURCES) else "other"
    elif kind == BOOT:
        d["boot"] = detail
    return d
