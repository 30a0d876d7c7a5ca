"""The access log, kept on flash: fixed-size records with a sequence number that survives reboots, appended one
at a time to two segment files in turn (log0.bin, log1.bin, CAPACITY records each; when one is full the other
starts afresh), so an event costs one 16-byte append and never a rewrite of the log. The newest CAPACITY records
are held; `dropped` counts the older ones. RAM holds only where the records are (restore.py finds them at boot).

Record (16 bytes, big endian): seq (u32) | t (u32 epoch, 0xFFFFFFFF = no trusted time) | kind (u16) |
check (u16) | detail (u32). The check (a Fletcher-16 of the other 14 bytes, seeded so that zeros fail) lets a
record prove itself whole: an append cut by a power failure is skipped, and the records before it are never
touched again. The ring file of earlier firmware (log.bin) is migrated at the first boot (restore.py).
"""
from micropython import const

import store
from be32 import put32 as _put32
from be32 import u32 as _u32

REC = const(16)
CAPACITY = const(128)
SEGMENT = "log%d.bin"  # % 0 or 1
_NOT = const(0xFFFFFFFF)  # no trusted time; a big int on the ESP32 either way, but no name on the heap

# Record kinds: the index of their name in KINDS. A module that records one names it as a private constant
# (`_KIND_OPENED = const(2)`; private consts cost no heap, a public one a name each on the lock), and
# device_tests/test_log_kinds.py checks every such constant against this table. Details: boot: boot count
# (low 24 bits) | index in REASONS << 24 (why the board started); opened: code id; refused: reason (REASONS);
# lockout: seconds; codeset / codeset_refused: the revision; time_set / time_refused: index in SOURCES;
# worker_stuck (main.py): the link's worker stopped showing signs of life, the watchdog resets the board.
_KIND_BOOT = const(1)
_KIND_OPENED = const(2)
_KIND_REFUSED = const(4)
_KIND_LOCKOUT = const(5)
_KIND_CODESET = const(7)
_KIND_CODESET_REFUSED = const(8)
_KIND_TIME_SET = const(9)
_KIND_TIME_REFUSED = const(10)
KINDS = ("", "boot", "opened", "opened_backup", "refused", "lockout", "rotation_due", "codeset",
         "codeset_refused", "time_set", "time_refused", "backup_first_use", "backup_installed", "crash",
         "worker_stuck")
# reasons: of a refusal (1..4: codes.UNKNOWN, OUTSIDE, NO_TIME, the lookup's results, then lock.py's wrong
# length), and why the board started (5.., board.reset_cause, kept in a boot record's detail: BOOT_CAUSE + i)
REASONS = ("", "unknown", "outside_window", "no_time", "length", "power_on", "watchdog", "crash", "software",
           "hard")
SOURCES = ("other", "server", "ntp", "rtc", "cloud")


def seal(r, o: int) -> int:
    """The check of the record at r[o:o+16]: a Fletcher-16 of its other 14 bytes, seeded so that zeros fail."""
    a = 0x5A
    b = 0xA5
    for i in range(o, o + REC):
        if i - o != 10 and i - o != 11:
            a = (a + r[i]) % 255
            b = (b + a) % 255
    return (b << 8) | a


class AccessLog:
    def __init__(self) -> None:
        # per segment: the seq of its first record (0: empty), the records written to it (whole or not), and
        # of those the whole ones; head: the segment appended to
        self.next_seq = 1
        self.start = [0, 0]
        self.count = [0, 0]
        self.n = [0, 0]
        self.head = 0
        self.buf = bytearray(REC)

    @property
    def last_seq(self) -> int:
        return self.next_seq - 1

    @property
    def dropped(self) -> int:
        return self.last_seq - min(self.n[0] + self.n[1], CAPACITY)

    def append(self, t, kind: int, detail: int = 0) -> int:
        seq = self.next_seq
        r = self.buf
        _put32(r, 0, seq)
        _put32(r, 4, _NOT if t is None else t)
        r[8] = kind >> 8
        r[9] = kind & 0xFF
        _put32(r, 12, detail & _NOT)
        c = seal(r, 0)
        r[10] = c >> 8
        r[11] = c & 0xFF
        i = self.head
        if self.count[i] >= CAPACITY:
            i = self.head = 1 - i
            self.count[i] = self.n[i] = 0  # the older segment's records go
        if not self.count[i]:
            self.start[i] = seq
        store.append(SEGMENT % i, r, not self.count[i])
        self.count[i] += 1
        self.n[i] += 1
        self.next_seq = seq + 1
        return seq

    def since(self, seq: int, limit: int):
        """Held records (seq, t, kind, detail) with a sequence number above seq, oldest first, at most limit."""
        lo = max(seq, self.last_seq - CAPACITY)
        out = []  # type: list
        r = self.buf
        for i in (1 - self.head, self.head):
            if not self.start[i] or (i != self.head and self.start[i] + self.count[i] <= lo):
                continue
            try:
                f = open(SEGMENT % i, "rb")
            except OSError:
                continue
            with f:
                while len(out) < limit and f.readinto(r) == REC:
                    s = _u32(r, 0)
                    if s > lo and seal(r, 0) == (r[10] << 8) | r[11]:
                        t = _u32(r, 4)
                        out.append((s, None if t == _NOT else t, (r[8] << 8) | r[9], _u32(r, 12)))
        return out


def as_dict(rec) -> dict:
    """The link-facing form of a record: {"seq", "t", "kind", ...details}."""
    seq, t, kind, detail = rec
    name = KINDS[kind] if kind < len(KINDS) else str(kind)
    d = {"seq": seq, "t": t, "kind": name}
    if kind == _KIND_OPENED:
        d["code_id"] = detail
    elif kind == _KIND_REFUSED:
        d["reason"] = REASONS[detail] if detail < len(REASONS) else str(detail)
    elif kind == _KIND_LOCKOUT:
        d["seconds"] = detail
    elif kind in (_KIND_CODESET, _KIND_CODESET_REFUSED):
        d["revision"] = detail
    elif kind in (_KIND_TIME_SET, _KIND_TIME_REFUSED):
        d["source"] = SOURCES[detail] if detail < len(SOURCES) else "other"
    elif kind == _KIND_BOOT:
        d["boot"] = detail & 0xFFFFFF
        c = detail >> 24
        if 4 < c < len(REASONS):
            d["reason"] = REASONS[c]
    return d
