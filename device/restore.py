"""The boot half of Lock.__init__: what a boot reads back from flash (the code set, adopting a factory backup
key; the access log; the state file; a lockout in force), the battery RTC, and the boot record. Only
Lock.__init__ uses it, and drops it from memory afterwards: the heap keeps only the code that runs every day."""

from micropython import const

import store

_KIND_BOOT = const(1)  # accesslog.KINDS


def boot(lock, board, cfg: dict, now: int) -> None:
    import accesslog as al
    from clock import TrustedClock
    import lockstate
    from lock import CODES_FILE
    from lockout import Lockout

    lock.codes = codes(cfg, CODES_FILE)
    lock.log = al.AccessLog()
    log(lock.log)
    st = store.load_dict(lockstate.NAME) or {}  # none, or unreadable: every key at its default (lockstate.py)
    lock.boot_count = int(st.get("boot", 0)) + 1
    lock.clock = TrustedClock(int(st.get("last_good", 0)))
    lock.lockout = Lockout()
    lock.lockout.fails = int(st.get("fails", 0))
    lock.lock_t = st.get("lock_t")  # epoch the lockout in force started (None if unknown)
    from backup import BackupKey

    lock.backup = BackupKey(st, now, lock.backup_tag())  # its life, for the backup digest installed now
    lock.rtc = rtc(board)  # trusted time from the battery RTC, when one is fitted
    lock.reset_cause = board.reset_cause  # why the board started (hello health, the boot record)
    c = al.REASONS.index(lock.reset_cause) if lock.reset_cause in al.REASONS[5:] else 0
    lock.record(_KIND_BOOT, (lock.boot_count & 0xFFFFFF) | c << 24, now)
    if lock.rtc is not None:
        t = lock.rtc.read()
        if t is not None:
            lock.set_trusted_time(t, "rtc")
    lockout(lock, st, now)


def codes(cfg: dict, name: str):
    from codes import CodeSet

    cs = CodeSet.parse(store.load(name)) or CodeSet()
    if cs.backup is None and cfg.get("backup_digest_bytes"):
        cs.backup = cfg["backup_digest_bytes"]  # factory provisioning: adopt the backup from config
        store.save(name, *cs.parts())
    return cs


def rtc(board):
    """The DS3231 when one answers at 0x68 on the board's I2C bus, else None (its driver imported only then)."""
    try:
        i2c = board.i2c()
        if i2c is not None and 0x68 in i2c.scan():
            from ds3231 import DS3231

            return DS3231(i2c)
    except OSError:
        pass
    return None




def lockout(lock, state: dict, now: int) -> None:
    """A lockout in force survives the power cycle: the rest of it when time is known, else all of it."""
    st = state
    lock_s = int(st.get("lock_s", 0))
    if lock_s <= 0:
        return
    rest = lock_s
    tn = lock.clock.now(now)
    started = st.get("lock_t")
    if started is not None and tn is not None:
        rest = min(lock_s, started + lock_s - tn)
    if rest > 0:
        lock.lockout.start(now, rest)
        lock.lockout.duration_s = lock_s


def log(log) -> None:
    """Find the access log's records on flash: whole ones counted, a cut append skipped (and the segment padded
    to a whole record, so appends stay aligned); the segment with the newest records is appended to. The ring
    file of earlier firmware (log.bin: next_seq (u32) | count (u16) | dropped (u32) | 16-byte records without a
    check) becomes log0.bin first; log.bin goes last, so a cut midway repeats that at the next boot."""
    from accesslog import CAPACITY, REC, SEGMENT, seal
    from be32 import u32

    data = store.load("log.bin")
    if data is not None and len(data) > 10 and (len(data) - 10) % REC == 0:
        cap = (len(data) - 10) // REC
        nxt = u32(data, 0)
        n = min((data[4] << 8) | data[5], cap, nxt - 1)
        out = bytearray(n * REC)
        for j in range(n):
            o = 10 + ((nxt - n + j) % cap) * REC
            out[j * REC:(j + 1) * REC] = data[o:o + REC]
            c = seal(out, j * REC)
            out[j * REC + 10] = c >> 8
            out[j * REC + 11] = c & 0xFF
        store.append(SEGMENT % 0, out, True)
        store.remove(SEGMENT % 1)
    if data is not None:
        store.remove("log.bin")
    r = log.buf
    last = [0, 0]
    for i in (0, 1):
        try:
            f = open(SEGMENT % i, "rb")
        except OSError:
            continue
        size = 0
        with f:
            while True:
                k = f.readinto(r)
                if not k:
                    break
                size += k
                if k == REC and seal(r, 0) == (r[10] << 8) | r[11]:
                    if not log.start[i]:
                        log.start[i] = u32(r, 0)
                    last[i] = u32(r, 0)
                    log.n[i] += 1
        log.count[i] = min(CAPACITY, (size + REC - 1) // REC)
        if size % REC:
            store.append(SEGMENT % i, bytes(REC - size % REC))  # zeros: never a whole record
    log.head = 1 if last[1] > last[0] else 0
    log.next_seq = max(last) + 1
