"""The link's policy (docs/protocol.md): what the lock says to the cloud and what it does with the answers.

The main loop calls Link.poll(now_ms) (a Lock service): it takes the messages the session's worker thread
received (already verified and parsed, device/linkmsg.py), applies them to the lock through a table of handlers
by message class (a new downlink type is a parser in Downlink plus an entry here), and queues what to send:
hello with health figures, acks, access-log batches, backup-key rotation requests. It never touches the
network: the session (device/session.py) does, and tests drive this class with a fake one.
"""
import gc
import os
from binascii import hexlify
from time import ticks_add, ticks_diff, ticks_ms

from micropython import const

import protocol as P
import store
from backoff import ceiling, jitter
from linkmsg import Down, LogAck, Refused, State, Time, Up
from version import VERSION

_LOG_RESEND_MS = const(10000)
_ROT_FIRST_MS = const(30000)
_ROT_MAX_MS = const(3600000)
_ROT_MIN_MS = const(1000)       # a jittered retry is never sooner than this
_INSTALL_TRIES = const(4)
_INSTALL_RETRY_MS = const(300)
_HELLO_FIRST_MS = const(30000)   # an unanswered hello is said again: full jitter under 30 s doubling …
_HELLO_MAX_MS = const(600000)    # … to 10 minutes (a storm of repeats stays bounded)
_HELLO_MIN_MS = const(10000)     # never sooner (a busy cloud works through a storm: repeats would add to it)
_REFUSED_LOG_MS = const(600000)  # one codeset_refused record per reason per 10 minutes; the counters carry the rest
# access-log record kinds (accesslog.KINDS)
_KIND_CODESET_REFUSED = const(8)


class Link:
    def __init__(self, lock, session) -> None:
        self.lock = lock
        self.session = session
        self._handlers = {Up: self._on_up, Down: self._on_down, Time: self._on_time, State: self._on_state,
                          LogAck: self._on_logack, Refused: self._on_refused}
        self._nonce = None  # type: str | None
        self._hello = None  # type: dict | None  # the session's hello while no time reply answered it
        self._hello_tries = 0
        self._hello_next = ticks_ms()
        self._cursor = 0
        self._sent_hi = 0
        self._sent_at = ticks_ms()
        self._rot_backoff = _ROT_FIRST_MS
        self._rot_next = 0
        self._shown_error = None  # type: str | None
        self._refused_at = {}  # type: dict  # reason -> ticks of its last access-log record
        self._booted = ticks_ms()
        self._later = None  # a State whose install ran out of memory, and when to try it again
        self._later_at = ticks_ms()
        # probed once, before the worker thread starts: probing later would starve that thread of memory
        self._block = largest_block()

    def handle(self, cls, fn) -> None:
        """Apply messages of class cls with fn(msg, now)."""
        self._handlers[cls] = fn

    def send(self, obj: dict) -> bool:
        return self.session.send(obj)

    def _emit(self, data: dict) -> None:
        try:
            self.lock.emit("link", data)
        except Exception:  # a listener's fault must not break the link
            pass

    # ---------------------------------------------------------------- the main loop's service
    def worker_stuck(self, bound_ms: int) -> bool:
        """Whether the network worker has shown no sign of life for bound_ms (real time): the main loop then
        stops feeding the watchdog, and the board resets."""
        t = self.session.beat
        return t is not None and ticks_diff(ticks_ms(), t) > bound_ms

    def poll(self, now) -> None:
        s = self.session
        s.start()
        if self._later is not None and ticks_diff(ticks_ms(), self._later_at) >= 0:
            msg, self._later = self._later, None
            self._on_state(msg, now)
        items = s.take()
        if items:
            for msg in items:
                try:
                    self._handlers[type(msg)](msg, now)
                except Exception as e:
                    s.count("apply_error")
                    self._emit({"error": repr(e)})
        err = s.last_error
        if err != self._shown_error:
            self._shown_error = err
            if err is not None:
                self._emit({"error": err})
        if s.connected:
            self._repeat_hello()
            self._upload()
            self._rotation(now)

    def status(self) -> dict:
        s = self.session
        return {"connected": s.connected, "last_error": s.last_error, "counter": s.counter.value,
                "log_cursor": self._cursor, "counts": dict(s.counts), "broker": s.host}

    # ---------------------------------------------------------------- handlers
    def _on_up(self, msg, now) -> None:
        lock = self.lock
        self._nonce = hexlify(os.urandom(8)).decode()
        self._sent_hi = self._cursor  # resend whatever was not acknowledged
        self._rot_next = now
        self._hello = {"v": P.V, "t": "hello", "will": msg.will, "fw": VERSION, "boot": lock.boot_count,
                       "time": lock.trusted_now(), "rev": lock.revision, "nonce": self._nonce,
                       "health": self.health()}
        self._hello_tries = 0
        self._send_hello()
        self._emit({"state": "connected"})

    def _send_hello(self) -> None:
        """Send the session's hello (each copy under a new counter) and schedule the next one: a hello the broker
        took while no bridge was subscribed is gone, and only the cloud's `time` reply says it arrived."""
        hello = self._hello
        if hello is None:
            return
        if self.session.send(dict(hello)):  # a copy: the worker thread writes the counter into what it sends
            self._hello_tries += 1
        cap = ceiling(self._hello_tries, _HELLO_FIRST_MS, _HELLO_MAX_MS) or _HELLO_FIRST_MS
        self._hello_next = ticks_add(ticks_ms(), max(_HELLO_MIN_MS, jitter(cap)))

    def _repeat_hello(self) -> None:
        # on the real clock, like the other network timeouts (see _upload)
        if self._hello is not None and ticks_diff(ticks_ms(), self._hello_next) >= 0:
            self._hello["time"] = self.lock.trusted_now()
            self._send_hello()
            self.session.count("hello_repeated")

    def _on_down(self, msg, now) -> None:
        self._nonce = None
        self._hello = None
        self._emit({"state": "offline", "reason": msg.reason})

    def _on_time(self, msg, now) -> None:
        if self._nonce is not None and msg.nonce == self._nonce:
            self._nonce = None
            self._hello = None
            ok = self.lock.set_trusted_time(msg.epoch, "server")
            self._emit({"time": msg.epoch, "ok": ok})
        else:
            self.session.count("stale_time")
            self._emit({"refused": "stale_time"})

    def _on_state(self, msg, now) -> None:
        try:
            self._apply_state(msg.rev, msg.codes, msg.backup)
        except MemoryError:
            # the heap is shared with the worker thread, whose peak (a TLS handshake) passes: try again a
            # little later (the worker waits), then refuse once like any message that does not fit
            msg.tries += 1
            if msg.tries < _INSTALL_TRIES:
                self._later = msg
                self._later_at = ticks_add(ticks_ms(), _INSTALL_RETRY_MS)
                return
            self._on_refused(Refused("no_memory"), now)
            self.session.count("no_memory")
        finally:
            if self._later is not msg:
                self.session.done()

    def _apply_state(self, rev: int, codes, backup) -> None:
        lock = self.lock
        if rev > lock.revision:
            if lock.install_codeset(rev, codes, backup):
                self.send({"v": P.V, "t": "ack", "rev": rev})
                self._emit({"codeset": rev, "codes": len(codes)})
                return
            self.session.count("install_refused")
            self._emit({"refused": "install", "revision": rev})
        elif rev == lock.revision:
            self.send({"v": P.V, "t": "ack", "rev": rev})
        else:
            lock.install_codeset(rev, codes, backup)  # refuses and logs the stale revision
            self.session.count("stale_revision")
            self._emit({"refused": "stale_revision", "revision": rev})

    def _on_logack(self, msg, now) -> None:
        if msg.seq > self._cursor:
            self._cursor = msg.seq

    def _on_refused(self, msg, now) -> None:
        """A downlink was dropped (already counted): an access-log record at most once per reason per 10
        minutes, so a flood of forged messages cannot wear the flash."""
        last = self._refused_at.get(msg.reason)
        # a negative difference: the ticks wrapped since (2**29 ms), so that record is long past too
        if last is None or not 0 <= ticks_diff(now, last) < _REFUSED_LOG_MS:
            self._refused_at[msg.reason] = now
            self.lock.record(_KIND_CODESET_REFUSED)
        self._emit({"refused": msg.reason})

    # ---------------------------------------------------------------- what the lock sends by itself
    def health(self) -> dict:
        """How the lock is doing, in each hello (docs/protocol.md, hello)."""
        return {"uptime": ticks_diff(ticks_ms(), self._booted) // 1000, "heap_free": gc.mem_free(),
                "heap_block": self._block, "rssi": self.session.rssi(), "reset": self.lock.reset_cause,
                "flash_writes": store.writes}

    def _upload(self) -> None:
        # network timeouts run on the real clock (ticks_ms), not the main loop's `now` (same on the ESP32;
        # in the simulator the world's clock may jump ahead)
        now = ticks_ms()
        lock = self.lock
        if self._sent_hi > self._cursor:
            if ticks_diff(now, self._sent_at) < _LOG_RESEND_MS:
                return
            self._sent_hi = self._cursor  # no logack in time: send again from the cursor
        if lock.last_seq <= self._cursor:
            return
        evs = lock.log_since(self._cursor, P.LOG_BATCH)
        if not evs:
            self._cursor = lock.last_seq  # the ring dropped them
            return
        if self.send({"v": P.V, "t": "log", "ev": evs}):
            self._sent_hi = evs[-1]["seq"]
            self._sent_at = now

    def _rotation(self, now) -> None:
        lock = self.lock
        if not lock.backup.due:
            self._rot_backoff = _ROT_FIRST_MS
            # keep the deadline near now: ticks wrap (2**30 ms on the ESP32), so a deadline left days behind
            # would read as days ahead when rotation falls due
            self._rot_next = now
            return
        if ticks_diff(now, self._rot_next) < 0:
            return
        if not self.send({"v": P.V, "t": "rotate", "first_used": lock.backup.first_used}):
            return  # not queued: try again on the next poll
        self._emit({"rotate": "requested"})
        # full jitter under a ceiling doubling from 30 s to an hour
        self._rot_next = ticks_add(now, max(_ROT_MIN_MS, jitter(self._rot_backoff)))
        self._rot_backoff = min(self._rot_backoff * 2, _ROT_MAX_MS)


def largest_block() -> int:
    """The largest heap block that can be allocated now (to 64 bytes). It allocates that much for a moment:
    only while no other thread runs."""
    lo = 0
    hi = gc.mem_free() + 64
    while hi - lo > 64:
        mid = (lo + hi) // 2
        try:
            bytearray(mid)
            lo = mid
        except MemoryError:
            hi = mid
    gc.collect()
    return lo


def start(lock, cfg: dict, board, small=False):
    """main.py's entry point: a Lock service, or None when the config has no usable mqtt section. small: an
    update's boot, whose downlink receives into a small buffer (Downlink)."""
    m = cfg.get("mqtt")
    if not isinstance(m, dict) or not (m.get("host") or m.get("hosts")):
        return None
    from downlink import Downlink
    env = P.Envelope(lock.secret, lock.lock_id)
    dl = Downlink(env, small)  # its ~21 KB of buffers first, while the heap is still in one piece
    cs = lock.codes
    if len(cs.records) <= len(dl.home):
        # the code set loaded from flash moves into its home too: the file's buffer (8.8 KB for 200 codes)
        # would otherwise stay held until the cloud sends a new revision, however long that takes
        cs.move_to(dl.home)
        gc.collect()
    from session import Session
    return Link(lock, Session(cfg, board, lock.lock_id, env, dl, lock.trusted_now))
