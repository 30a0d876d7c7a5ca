"""The lock application: keypad -> decision -> relay. An entry (entry.py) is checked offline against the code
set (codes.py) and the backup key (backup.py, its life), under the lockout (lockout.py) and trusted time
(clock.py), logged (accesslog.py) and persisted (store.py; the state file: lockstate.py). The drivers come in built (main.py, the composition
root); the link (MQTT) plugs in as a service (add_service) and through the seam documented in docs/firmware.md."""
from micropython import const

import gc
import sys
from time import ticks_add, ticks_diff

import accesslog as al
from backup import BackupKey
import store
from clock import TrustedClock
from codes import OPEN, CodeSet
from entry import Entry
from hmac256 import Hmac256, equal
from keypad import SCAN_MS
import lockstate
from lockout import Lockout
from relay import PATTERNS

if False:  # for the type checker only
    from ds3231 import DS3231
    from keypad import Keypad
    from relay import Feedback, Relay

CODES_FILE = "codes.bin"

_CHECK_MS = const(1000)
# access-log record kinds (accesslog.KINDS)
_KIND_OPENED = const(2)
_KIND_OPENED_BACKUP = const(3)
_KIND_REFUSED = const(4)
_KIND_LOCKOUT = const(5)
_KIND_ROTATION_DUE = const(6)
_KIND_CODESET = const(7)
_KIND_CODESET_REFUSED = const(8)
_KIND_TIME_SET = const(9)
_KIND_TIME_REFUSED = const(10)
_KIND_BACKUP_FIRST_USE = const(11)
_KIND_BACKUP_INSTALLED = const(12)
_WRONG_LENGTH = const(4)  # the refusal reason after the lookup's unknown, outside_window, no_time (accesslog.REASONS)
_STAR = const(42)
_HASH = const(35)
_ZERO = const(48)
_NINE = const(57)


class Lock:
    # set by restore.boot(), the boot half of __init__ (annotations only: nothing at run time)
    codes: CodeSet
    log: al.AccessLog
    clock: TrustedClock
    lockout: Lockout
    boot_count: int
    rtc: "DS3231 | None"
    reset_cause: str
    backup: BackupKey
    lock_t: "int | None"  # trusted epoch the lockout in force started (the state file keeps it)

    def __init__(self, board, cfg: dict, relay: "Relay", feedback: "Feedback", keypad: "Keypad") -> None:
        self.board = board
        self.ticks_ms = board.ticks_ms
        self.lock_id = cfg["lock_id"]  # type: str
        self.secret = cfg["secret_bytes"]  # type: bytes
        self.relay_ms = int(cfg["relay_ms"])
        self._mac = Hmac256(self.secret)
        self.entry = Entry(int(cfg["code_length"]), int(cfg["entry_timeout_ms"]))
        self._services = []  # type: list
        self._listeners = []  # type: list
        self.service_errors = 0
        self._booting = True  # the state is saved once, at the end of __init__
        now = self.ticks_ms()

        self.relay = relay
        self.feedback = feedback
        self.keypad = keypad

        # persisted state, the RTC and the boot record: boot-only code (restore.py), dropped from memory afterwards
        import restore

        restore.boot(self, board, cfg, now)
        del restore, sys.modules["restore"]
        self._was_locked = self.lockout.active
        self._next_check = now
        self._booting = False
        lockstate.save(self)
        gc.collect()
        board.start_ticker(SCAN_MS, self._tick)

    # -- timer context: must not allocate ----------------------------------------------------------------
    def _tick(self) -> None:
        now = self.ticks_ms()
        self.keypad.scan()
        self.relay.tick(now)
        self.feedback.tick(now)

    # -- main loop ---------------------------------------------------------------------------------------
    def poll(self, now=None) -> None:
        """One main-loop iteration: drain keys, expire the entry, housekeeping, then the services."""
        if now is None:
            now = self.ticks_ms()
        while True:
            k = self.keypad.pop()
            if k < 0:
                break
            self.handle_key(k, now)
        if self.entry.expired(now):
            self.entry.clear()
            self._emit("entry", "cleared", "timeout")
        if ticks_diff(now, self._next_check) >= 0:
            self._next_check = ticks_add(now, _CHECK_MS)
            self._housekeeping(now)
        for s in self._services:
            try:
                s.poll(now)
            except Exception as e:  # a faulty service must not take the keypad down
                self.service_errors += 1
                self._emit("service_error", "error", repr(e))

    def _housekeeping(self, now: int) -> None:
        self.clock.poll(now)
        if self._was_locked and self.lockout.remaining_ms(now) == 0:
            self._was_locked = False
            lockstate.save(self)
        b = self.backup
        was = b.due
        if b.poll(now, self.clock.now(now)):
            if b.due and not was:
                self.record(_KIND_ROTATION_DUE, 0, now)
            lockstate.save(self)

    def busy(self) -> bool:
        """True while something is timed: relay energised, feedback playing, an entry or a key in progress."""
        return self.relay.is_on or self.feedback.busy or self.entry.n > 0 or self.keypad.pending()

    # -- keypad ------------------------------------------------------------------------------------------
    def handle_key(self, k: int, now: int) -> None:
        if self._listeners:
            self._emit("key", "key", chr(k))
        e = self.entry
        if self.lockout.remaining_ms(now) > 0:
            e.clear()
            self._feedback("locked_out", now)
            return
        if k == _STAR:
            e.clear()
            self.feedback.play(PATTERNS["key"], now)
        elif k == _HASH:
            if e.n:
                self._submit(now)
        elif _ZERO <= k <= _NINE:
            if e.digit(k, now):
                self._submit(now)
            else:
                self.feedback.play(PATTERNS["key"], now)

    def _submit(self, now: int) -> None:
        e = self.entry
        if e.n != len(e.buf):
            e.clear()
            self._refuse(now, _WRONG_LENGTH)
            return
        d = self._mac.digest(e.buf)
        e.clear()
        if self.codes.is_backup(d):
            self.relay.open(now, self.relay_ms)
            self._accept(now)
            self.record(_KIND_OPENED_BACKUP, 0, now)
            if self.backup.use(now, self.clock.now(now)):
                self.record(_KIND_BACKUP_FIRST_USE, 0, now)
                lockstate.save(self)
            return
        res, cid = self.codes.lookup(d, self.clock.now(now))
        if res == OPEN:
            self.relay.open(now, self.relay_ms)
            self._accept(now)
            self.record(_KIND_OPENED, cid, now)
        else:
            self._refuse(now, res)  # unknown, outside_window or no_time: the lookup's result is the reason

    def _accept(self, now: int) -> None:
        self._feedback("accepted", now)
        if self.lockout.fails:
            self.lockout.success()
            lockstate.save(self)

    def _refuse(self, now: int, reason: int) -> None:
        """Refuse an entry (reason: an index in accesslog.REASONS). Every refusal counts towards the lockout
        with the same feedback and the same work, whatever the reason (only the access log knows it): an
        unknown code, a wrong length, a real code outside its window or without trusted time all look alike,
        so the keypad tells a guesser nothing about which codes exist (docs/security.md, guessing budget)."""
        secs = self.lockout.failure(now)
        self._feedback("locked_out" if secs else "refused", now)
        self.record(_KIND_REFUSED, reason, now)
        if secs:
            self.lock_t = self.clock.now(now)
            self._was_locked = True
            self.record(_KIND_LOCKOUT, secs, now)
        lockstate.save(self)

    def _feedback(self, kind: str, now: int) -> None:
        self.feedback.play(PATTERNS[kind], now)
        self._emit("feedback", "kind", kind)

    # -- seam for the link (see docs/firmware.md, "Link seam") ---------------------------------------------
    @property
    def revision(self) -> int:
        return self.codes.revision

    @property
    def last_seq(self) -> int:
        return self.log.last_seq

    def trusted_now(self):
        """Trusted UTC epoch seconds, or None when the lock has no trusted time."""
        return self.clock.now(self.ticks_ms())

    def set_trusted_time(self, epoch: int, source: str) -> bool:
        now = self.ticks_ms()
        was = self.clock.now(now)
        src = al.SOURCES.index(source) if source in al.SOURCES else 0
        if not self.clock.set(epoch, now, source):
            self.record(_KIND_TIME_REFUSED, src, now)
            return False
        if self.rtc is not None and source != "rtc":
            self.rtc.write(int(epoch))
        if was is None or abs(int(epoch) - was) > 60:
            self.record(_KIND_TIME_SET, src, now)
            if not self._booting:
                lockstate.save(self)
        return True

    def install_codeset(self, revision: int, codes, backup_digest=None, count=None) -> bool:
        now = self.ticks_ms()
        if revision <= self.codes.revision:
            self.record(_KIND_CODESET_REFUSED, revision, now)
            return False
        old = self.codes.backup
        new_backup = backup_digest if backup_digest is not None else old
        try:
            gc.collect()
            cs = CodeSet.build(revision, codes, new_backup, count)
        except (ValueError, TypeError):
            self.record(_KIND_CODESET_REFUSED, revision, now)
            return False
        store.save(CODES_FILE, *cs.parts())
        home = getattr(codes, "home", None)
        if home is not None:  # records decoded in the link's receiving buffer: they move to their own
            cs.move_to(home)
        self.codes = cs
        gc.collect()
        self.record(_KIND_CODESET, revision, now)
        if backup_digest is not None and (old is None or not equal(old, backup_digest)):
            self.backup.reset(self.backup_tag())
            self.record(_KIND_BACKUP_INSTALLED, 0, now)
            lockstate.save(self)
        return True

    def log_since(self, seq: int, limit: int) -> list:
        return [al.as_dict(r) for r in self.log.since(seq, limit)]

    def add_service(self, obj) -> None:
        """obj.poll(now_ms) is called on every main-loop iteration; it must not block."""
        self._services.append(obj)

    def add_listener(self, fn) -> None:
        """fn(event, data) for "feedback", "key", "entry", "log" and "service_error" events (and whatever the
        services emit, e.g. "link")."""
        self._listeners.append(fn)

    def emit(self, event: str, data: dict) -> None:
        """Notify the listeners: fn(event, data) for each, in order (an exception goes to the caller)."""
        for fn in self._listeners:
            fn(event, data)

    def record(self, kind: int, detail: int = 0, now=None) -> None:
        """Write an access-log entry (kind: an accesslog constant; now: ticks, default the current ones): stamped
        with the trusted time, persisted, and sent to the listeners as a "log" event."""
        if now is None:
            now = self.ticks_ms()
        t = self.clock.now(now)
        seq = self.log.append(t, kind, detail)
        if self._listeners:
            self.emit("log", al.as_dict((seq, t, kind, detail)))

    def digest(self, code: bytes) -> bytes:
        """A code's digest under this lock's secret, as the cloud computes it for a state (the simulator's
        command line installs codes with it)."""
        return self._mac.digest(code)

    def status(self) -> dict:
        return {
            "lock_id": self.lock_id, "revision": self.revision, "codes": self.codes.count,
            "boot_count": self.boot_count, "trusted_now": self.trusted_now(), "time_source": self.clock.source,
            "last_good_time": self.clock.last_good, "rotation_due": self.backup.due,
            "backup_first_used": self.backup.first_used, "backup_used": self.backup.used,
            "fails": self.lockout.fails, "lockout_ms": self.lockout.remaining_ms(self.ticks_ms()),
            "last_seq": self.last_seq, "log_dropped": self.log.dropped, "rtc": self.rtc is not None,
            "has_backup": self.codes.backup is not None, "corrupt_files_seen": store.corrupt_seen,
            "key_overflows": self.keypad.overflows, "digits": self.entry.n, "reset_cause": self.reset_cause, "flash_writes": store.writes,
        }

    def backup_tag(self) -> str:
        """Which backup digest is installed (its first 8 bytes, hex): the backup key's life belongs to it."""
        b = self.codes.backup
        return "" if b is None else "".join("%02x" % x for x in b[:8])

    # -- internals -----------------------------------------------------------------------------------------

    def _emit(self, event: str, key: str, value) -> None:
        if self._listeners:
            self.emit(event, {key: value})
