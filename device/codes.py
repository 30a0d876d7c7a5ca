"""The code store: digests of the codes with their validity windows, and the backup key's digest.

Pure logic (no hardware). Records live in one bytearray, 44 bytes each:
    digest (32) | code id (u32) | valid_from (u32) | valid_until (u32)      big endian, window [from, until)
An open-addressing hash table (u16 slot -> record index + 1) keyed by the first 3 bytes of the digest finds
the candidates of an entry in O(1): one HMAC of the entry, a probe, a constant-time compare of the full
digest per candidate, then the window check. Several records may share a digest (the same code in
non-overlapping windows); they are all candidates.

File payload (see store.py for the envelope): revision (u32) | count (u16) | has backup (u8) |
backup digest (32) | records.
"""
from micropython import const

from be32 import put32 as _put32
from be32 import u32 as _u32
from hmac256 import equal

REC = const(44)
_DIGEST = const(32)
MAX_CODES = const(4000)
_HEAD = const(39)

# lookup results; a refused one is also the refusal reason the access log records: its index in
# accesslog.REASONS ("unknown", "outside_window", "no_time"; private, so no name on the heap)
OPEN = const(0)
_UNKNOWN = const(1)
_OUTSIDE = const(2)
_NO_TIME = const(3)

_U32 = const(0xFFFFFFFF)


class CodeSet:
    def __init__(self) -> None:
        self.revision = 0
        self.count = 0
        self.backup = None  # type: bytes | None
        self.records = bytearray(0)  # type: bytearray | memoryview
        self._table = bytearray(0)
        self._mask = 0

    # -- building -----------------------------------------------------------------------------------------
    @staticmethod
    def build(revision: int, codes, backup, count=None):
        """A new CodeSet from (code_id, digest, valid_from, valid_until) tuples; ValueError if malformed."""
        cs = CodeSet()
        if revision < 0 or revision > _U32:
            raise ValueError("revision")
        recs = getattr(codes, "records", None)
        if recs is not None:
            # already in the record layout (the link decodes a state into a buffer it reserved at boot):
            # validate and adopt without copying -- no large allocation on a fragmented heap
            if len(recs) % REC or len(recs) // REC > MAX_CODES:
                raise ValueError("records")
            n = len(recs) // REC
            for o in range(0, n * REC, REC):
                cid = _u32(recs, o + 32)
                if not (0 < cid <= _U32) or _u32(recs, o + 40) <= _u32(recs, o + 36):
                    raise ValueError("code")
        else:
            recs, n = CodeSet._records(codes, count)
        if backup is not None and len(backup) != _DIGEST:
            raise ValueError("backup")
        cs.revision = revision
        cs.backup = bytes(backup) if backup is not None else None
        cs._adopt(recs, n)
        return cs

    @staticmethod
    def _records(codes, count):
        """(records, n) built from (code_id, digest, valid_from, valid_until) tuples; ValueError if malformed."""
        if count is None:
            try:
                count = len(codes)
            except TypeError:
                count = 0  # an iterable of unknown length (e.g. a generator decoding a message): grow
        if count > MAX_CODES:
            raise ValueError("too many codes")
        recs = bytearray(count * REC)  # one allocation when the count is known
        rec = bytearray(REC)
        o = 0
        for c in codes:
            cid, dg, vf, vu = c
            if len(dg) != _DIGEST or not (0 < cid <= _U32) or not (0 <= vf < vu <= _U32):
                raise ValueError("code")
            if o + REC > len(recs):
                if o // REC >= MAX_CODES:
                    raise ValueError("too many codes")
                recs.extend(rec)
            recs[o : o + _DIGEST] = dg
            _put32(recs, o + 32, cid)
            _put32(recs, o + 36, vf)
            _put32(recs, o + 40, vu)
            o += REC
        n = o // REC
        if o != len(recs):
            recs = recs[:o]  # fewer codes than announced
        if n > MAX_CODES:
            raise ValueError("too many codes")
        return recs, n

    def _adopt(self, recs, n: int) -> None:
        slots = 16
        while slots < 2 * n:
            slots <<= 1
        table = bytearray(2 * slots)
        mask = slots - 1
        for i in range(n):
            o = i * REC
            s = ((recs[o] << 16) | (recs[o + 1] << 8) | recs[o + 2]) & mask
            while table[2 * s] | table[2 * s + 1]:
                s = (s + 1) & mask
            v = i + 1
            table[2 * s] = v >> 8
            table[2 * s + 1] = v & 0xFF
        self.records = recs
        self.count = n
        self._table = table
        self._mask = mask

    def move_to(self, home) -> None:
        """Keep the records in home (a buffer reserved at boot, at least as large), so the buffer they were
        decoded in receives again. A slice copy: nothing allocated but a memoryview, nothing to fail half way."""
        n = len(self.records)
        home[:n] = self.records
        self.records = memoryview(home)[:n]

    # -- lookup -------------------------------------------------------------------------------------------
    def is_backup(self, digest: bytes) -> bool:
        b = self.backup
        return b is not None and equal(b, digest)

    def lookup(self, digest: bytes, now):
        """(result, code_id) for an entry's digest at trusted time now (None = untrusted)."""
        recs = self.records
        table = self._table
        mask = self._mask
        if not self.count:
            return _UNKNOWN, 0
        s = ((digest[0] << 16) | (digest[1] << 8) | digest[2]) & mask
        mv = memoryview(recs)
        result = _UNKNOWN
        cid = 0
        while True:
            v = (table[2 * s] << 8) | table[2 * s + 1]
            if not v:
                break
            o = (v - 1) * REC
            if equal(mv[o : o + _DIGEST], digest):
                known = _u32(recs, o + 32)
                if now is None:
                    if result == _UNKNOWN:
                        result, cid = _NO_TIME, known
                elif _u32(recs, o + 36) <= now < _u32(recs, o + 40):
                    return OPEN, known
                else:
                    result, cid = _OUTSIDE, known
            s = (s + 1) & mask
        return result, cid

    # -- persistence --------------------------------------------------------------------------------------
    def parts(self):
        """Buffers for store.save()."""
        head = bytearray(_HEAD)
        _put32(head, 0, self.revision)
        head[4] = self.count >> 8
        head[5] = self.count & 0xFF
        if self.backup is not None:
            head[6] = 1
            head[7:39] = self.backup
        return head, self.records

    @staticmethod
    def parse(data):
        """A CodeSet from a stored payload, or None when it is inconsistent."""
        if data is None or len(data) < _HEAD:
            return None
        n = (data[4] << 8) | data[5]
        if len(data) != _HEAD + n * REC:
            return None
        cs = CodeSet()
        cs.revision = _u32(data, 0)
        if data[6]:
            cs.backup = bytes(data[7:39])
        cs._adopt(data[_HEAD:], n)  # no copy: the records stay in the loaded file's buffer (read only)
        return cs
