"""The bridge's main loop: when it takes uplinks, when it publishes desired states, and its periodic jobs.

One loop in the main thread: take a batch of uplinks from the session's inbox and apply it in chunks (one
transaction each, sized to about CHUNK_S); publish queued desired states between chunks when woken (a handler
queued one, PostgreSQL NOTIFY) or every poll; write last-contact times and announce firmware once a second,
expire codes every `expire_every` seconds, reconcile broker logins, keep the metrics file fresh within 0.2 s.

Uplinks the database did not take (it is not answering, or one uplink's work kept failing) are held here in
arrival order, unacknowledged, and applied again after HOLD_FIRST seconds, doubling to HOLD_MAX. While the
database is away nothing new is taken from the inbox and nothing else touches the database: the broker stops
sending once its window of unacknowledged messages to this client is full and queues the rest in the session
(docs/protocol.md, "When the database is away").
"""
from __future__ import annotations

import gc
import logging
import queue
import threading
import time

from ..extensions import db
from . import firmware as _firmware  # registers the firmware uplinks; announce_due
from .wakeup import Listener

log = logging.getLogger("keydrop.bridge")

CHUNK = 1000  # uplinks per transaction at most (a flood of cheap ones: the commit's cost is shared)
CHUNK_S = 0.05  # … and about this long: queued states are published between chunks, so a backlog of uplinks that
# cost a few ms each (hellos, first acks) does not hold a new code back for the whole backlog
BACKLOG_POLL = 0.02  # seconds between publishing turns while the publisher has more queued than it may send
METRICS_EVERY = 0.2  # the metrics file lags the counters by at most this, even with no traffic
HOLD_FIRST, HOLD_MAX = 0.5, 5.0  # seconds before held uplinks are applied again: doubling from, up to
HOLD_TRIES = 5  # an uplink held this often while the database answered (its own work fails) is counted `error`


class MainLoop:
    def __init__(self, bridge, *, poll: float, expire_every: float):
        self.bridge = bridge
        self.poll = poll
        self.expire_every = expire_every
        self._woken = True
        self._notified = threading.Event()  # set by the LISTEN thread; checked between chunks
        self._per_msg = 0.0  # seconds per uplink, moving average (sizes the chunks)
        self._stop = threading.Event()
        self._last_poll = self._last_metrics = 0.0
        self._last: dict[str, float] = {}  # periodic job → when it last ran
        self.held: list[tuple] = []  # (mid, topic, payload, tries): not taken by the database, not acknowledged
        self._retry_at = 0.0
        self._backoff = HOLD_FIRST
        self._away_since: float | None = None  # the database is not answering since (monotonic)
        self._away_most = 0  # the most uplinks held during this outage

    @property
    def db_away(self) -> bool:
        return self._away_since is not None

    def wake(self) -> None:
        """A handler queued a desired state: publish at the end of this batch, not at the next poll."""
        self._woken = True

    def notified(self) -> None:
        """From the LISTEN thread: a change was committed. The flag is seen between two chunks of uplinks; the
        item in an empty inbox ends a wait for uplinks."""
        self._notified.set()
        inbox = self.bridge.session.inbox
        if inbox.empty():
            try:
                inbox.put_nowait(("wake", None, None))
            except queue.Full:
                pass

    def stop(self) -> None:
        self._stop.set()

    def run(self, max_batch: int) -> None:
        b = self.bridge
        gc.collect()
        gc.freeze()  # the start-up objects (app, models, metadata) need no more collecting: shorter GC pauses
        _watch_gc()
        b.session.start()
        listener = None
        if b.listen:
            listener = Listener(db.engine.url, self.notified)
            listener.start()
        self._last["counters"] = time.monotonic()
        try:
            while not self._stop.is_set():
                self._apply(self._next(max_batch))
                self._periodic()
        finally:
            if self.held:
                log.warning("stopping with %d uplinks held: not acknowledged (with a worker slot the broker sends "
                            "them to the worker restarted in it)", len(self.held))
            log.info("bridge counters: %s", b.metrics.summary())
            b._safely("recording last contact", b.flush_seen)
            b.metrics.write()
            if listener is not None:
                listener.stop()
            b.session.stop()
            db.session.remove()

    def _due(self) -> bool:
        return self._woken or self._notified.is_set()

    def _poll_every(self) -> float:
        return BACKLOG_POLL if self.bridge.publisher.backlog else self.poll

    def _next(self, max_batch: int) -> list:
        """The held uplinks when they are due (then, unless the database is away, new ones behind them), else the
        new ones; nothing while the database is away and its next try is not due."""
        if not self.held:
            return self._take(max_batch)
        now = time.monotonic()
        if now < self._retry_at:
            if self.db_away:
                self._stop.wait(min(self._retry_at - now, METRICS_EVERY))
                return []
            return self._take(max_batch, until=self._retry_at)
        batch, self.held = self.held, []
        if self.db_away:
            return batch  # the database is tried again with what it did not take, in order
        return batch + self._take(max(0, max_batch - len(batch)), until=now)

    def _take(self, max_batch: int, until: float | None = None) -> list:
        """The uplinks waiting in the inbox (up to max_batch), waiting for one only until something else is due."""
        timeout = 0.0 if self._due() else max(0.0, self._poll_every() - (time.monotonic() - self._last_poll))
        if self.bridge.metrics.dirty:
            timeout = min(timeout, max(0.0, METRICS_EVERY - (time.monotonic() - self._last_metrics)))
        if until is not None:
            timeout = min(timeout, max(0.0, until - time.monotonic()))
        if max_batch <= 0:
            return []
        inbox = self.bridge.session.inbox
        batch = []
        try:
            batch.append(inbox.get(timeout=timeout))
            while len(batch) < max_batch:
                batch.append(inbox.get_nowait())
        except queue.Empty:
            pass
        return batch

    def _chunk(self) -> int:
        if self._per_msg <= 0:
            return CHUNK
        return max(10, min(CHUNK, int(CHUNK_S / self._per_msg)))

    def _apply(self, batch: list) -> None:
        # one transaction per chunk: the database's write lock (SQLite) is held briefly, and the desired states
        # are published between chunks, not after a whole long batch
        b = self.bridge
        i = 0
        while i < len(batch):
            size = self._chunk()
            part, i = batch[i:i + size], i + size
            t0 = time.monotonic()
            records = self._uplinks(part)
            if records:
                held, chunk = b.apply_chunk(records)
                if chunk.unavailable is not None:  # the rest of the batch is not tried now
                    self._hold(held + self._uplinks(batch[i:]), chunk.unavailable)
                    break
                self._hold(held, None)
                if not held:
                    per = (time.monotonic() - t0) / len(records)
                    self._per_msg = per if self._per_msg <= 0 else 0.7 * self._per_msg + 0.3 * per
            if self._due():
                self.publish_due()
                self._last_poll = time.monotonic()
            self._write_metrics()  # fresh during a backlog too

    def _uplinks(self, part: list) -> list:
        """The uplinks of a part of a batch; its markers ("connected", "wake") are seen to here."""
        records = []
        for rec in part:
            if rec[1] is None:
                if rec[0] == "connected":
                    self.bridge.metrics.add("connects")
                self._woken = True
            else:
                records.append(rec)
        return records

    def _hold(self, held: list, unavailable: BaseException | None) -> None:
        """Keep what the database did not take, for the next try; log once when the database goes away and once
        when it answers again."""
        b = self.bridge
        now = time.monotonic()
        if unavailable is not None:
            self.held.extend(held)
            if not self.db_away:
                self._away_since, self._away_most, self._backoff = now, 0, HOLD_FIRST
                b.metrics.add("db_unavailable")
                log.error("the database is not answering (%s): %d uplinks held, not acknowledged; tried again "
                          "from %.1f s doubling to %.0f s, no new uplinks taken meanwhile (the broker keeps "
                          "them)", _reason(unavailable), len(self.held), HOLD_FIRST, HOLD_MAX)
        else:
            if self.db_away:
                log.warning("the database answers again after %.1f s (%d uplinks were held at most)",
                            now - self._away_since, max(self._away_most, len(held)))
                self._away_since, self._backoff = None, HOLD_FIRST
            for mid, topic, payload, *rest in held:
                tries = (rest[0] if rest else 0) + 1
                if tries < HOLD_TRIES:
                    self.held.append((mid, topic, payload, tries))
                    continue
                lock_id = topic.split("/")[1] if topic.count("/") == 2 else "?"
                log.error("uplink from %s not applied after %d tries while the database answered: counted "
                          "error", lock_id, tries)
                b.metrics.drop("error", lock_id, level=0)
                if mid is not None:
                    b.session.ack([mid])
            if not self.held:
                self._backoff = HOLD_FIRST
        if held:
            self._retry_at = now + self._backoff
            self._backoff = min(self._backoff * 2, HOLD_MAX)
        self._away_most = max(self._away_most, len(self.held))
        b.metrics.gauge("held", len(self.held))

    def _periodic(self) -> None:
        b = self.bridge
        now = time.monotonic()
        if self.db_away:  # only the held uplinks' next try asks the database
            self._write_metrics()
            return
        if self._due() or now - self._last_poll >= self._poll_every():
            self.publish_due()
            self._last_poll = now
        if self._every("last contact", 1.0, now):
            b._safely("recording last contact", b.flush_seen)
        if self._every("expiry", self.expire_every, now):
            self._expire_due()
        b._safely("reconciling broker logins", b.credentials.sync)
        if self._every("firmware", 1.0, now):
            b._safely("announcing firmware releases", lambda: _firmware.announce_due(b))
            b.flush_replies()
        # the clock read again: the publishing above may have waited seconds for a broker's PUBACK, and its
        # counters must not wait for one more attempt
        self._write_metrics()
        if self._every("counters", 60.0, now):
            log.info("bridge counters: %s", b.metrics.summary())

    def _every(self, job: str, period: float, now: float) -> bool:
        if now - self._last.get(job, 0.0) < period:
            return False
        self._last[job] = now
        return True

    def _write_metrics(self) -> None:
        if self.bridge.metrics.dirty and time.monotonic() - self._last_metrics >= METRICS_EVERY:
            self._last_metrics = time.monotonic()
            self.bridge.metrics.write()

    def publish_due(self) -> None:
        """Publish queued states until the queue is empty or the rate limit says wait (then poll soon)."""
        publisher = self.bridge.publisher
        self._woken = False
        self._notified.clear()
        t0 = time.monotonic()
        n = 0
        try:
            while True:
                k = publisher.publish_due()
                n += k
                if k < publisher.batch:
                    break
                if time.monotonic() - t0 > 0.05:
                    self._woken = True  # more to do: come back after the next uplinks
                    break
        except Exception:
            log.exception("publishing desired states")
            db.session.rollback()
        dt = time.monotonic() - t0
        if dt > 0.25:
            log.warning("publishing %d desired states took %.0f ms", n, dt * 1000)

    def _expire_due(self) -> None:
        from .. import domain
        try:
            changed = domain.expire_due()
            if changed:
                log.info("expired codes on %d locks", len(changed))
        except Exception:
            log.exception("expire_due")
            db.session.rollback()


def _reason(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    return " ".join(str(orig if orig is not None else exc).split())[:200]


def _watch_gc() -> None:
    """Log garbage-collector pauses over 100 ms (they delay every message behind them)."""
    started = {}

    def cb(phase, info):
        if phase == "start":
            started["t"] = time.perf_counter()
        else:
            dt = time.perf_counter() - started.get("t", time.perf_counter())
            if dt > 0.1:
                log.warning("garbage collection (generation %s) paused the bridge %.0f ms", info.get("generation"),
                            dt * 1000)
    gc.callbacks.append(cb)
