"""The bridge process: wires session, verification, dispatch and publisher together and runs the main loop.

One loop in the main thread: take a batch of uplinks from the session's inbox, verify and apply each, commit,
then acknowledge them to the broker; publish queued desired states when woken (PostgreSQL NOTIFY, or after a
handler queued one) or every KEYDROP_BRIDGE_POLL seconds; write last-contact times once a second.
"""
from __future__ import annotations

import gc
import logging
import os
import queue
import hashlib
import hmac
import secrets
import signal
import threading
import time
from typing import Optional

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from ..extensions import db
from ..models import BridgeLockState, Lock
from ..timeutil import utcnow
from .credentials import BrokerCredentials
from . import firmware as _firmware  # registers the firmware uplinks; announce_due
from . import inbound
from .envelope import Keyring
from .metrics import Metrics
from .publisher import Publisher
from .session import Session
from .wakeup import Listener

log = logging.getLogger("keydrop.bridge")

CHUNK = 1000  # uplinks per transaction at most (a flood of cheap ones: the commit's cost is shared)
CHUNK_S = 0.05  # … and about this long: queued states are published between chunks, so a backlog of uplinks that
# cost a few ms each (hellos, first acks) does not hold a new code back for the whole backlog


class Bridge:
    def __init__(self, app, *, host: str, port: int, username: Optional[str], password: Optional[str],
                 tls_ca: Optional[str] = None, shared: bool = True, poll: Optional[float] = None,
                 expire_every: float = 30.0, client_id: Optional[str] = None,
                 reconcile_every: float = 300.0, metrics_file: Optional[str] = None, state_rate: float = 1000.0,
                 persistent: bool = False):
        self.app = app
        self.listen = db.engine.dialect.name == "postgresql"  # LISTEN/NOTIFY wakes it
        # with LISTEN/NOTIFY the poll is only a safety net; on SQLite it is how changes are found
        self.poll = poll if poll is not None else (1.0 if self.listen else 0.05)
        self.expire_every = expire_every
        self.metrics = Metrics(metrics_file)
        self.keyring = Keyring(on_change=self._forget_lock)
        # the client id is unguessable and unique per worker: nobody can end a worker's session by reusing it
        self.session = Session(self.metrics, host=host, port=port, username=username, password=password,
                               client_id=client_id or f"keydrop-bridge-{secrets.token_hex(8)}", tls_ca=tls_ca,
                               shared=shared, persistent=persistent)
        self.publisher = Publisher(self.session, self.keyring, self.metrics, rate=state_rate)
        self.credentials = BrokerCredentials(app.config, every=reconcile_every)
        self.acked: dict[str, int] = {}  # lock id → acked revision the cloud recorded (skips re-ack writes)
        self._replies: list[tuple[str, bytes]] = []  # downlinks waiting for their transaction's commit
        self._seen: dict[str, object] = {}  # lock id → time of its last verified uplink, not yet written
        self._woken = True
        self._notified = threading.Event()  # set by the LISTEN thread; checked between chunks
        self._per_msg = 0.0  # seconds per uplink, moving average (sizes the chunks)
        self.fw_announced: dict[tuple[str, int], float] = {}  # (lock id, rollout id) -> when last announced
        self._stop = threading.Event()

    def _forget_lock(self, lock_id: str) -> None:
        """The lock under this id was decommissioned or registered again: nothing cached of it still holds."""
        self.acked.pop(lock_id, None)
        for key in [k for k in self.fw_announced if k[0] == lock_id]:
            del self.fw_announced[key]

    # the pieces tests and tools reach for
    @property
    def counts(self):
        return self.metrics.counts

    @property
    def client(self):
        return self.session.client

    @client.setter
    def client(self, c) -> None:
        self.session.client = c

    def reply(self, lock_id: str, obj: dict) -> None:
        """A signed, non-retained downlink to one lock (time, logack, …), published once the transaction that
        applied the uplink it answers has committed (a lock told `time` was heard, is)."""
        topic = f"lock/{lock_id}/down"
        self._replies.append((topic, self.keyring.get(lock_id).seal(topic, obj)))

    def pending_replies(self) -> int:
        return len(self._replies)

    def drop_replies(self, keep: int) -> None:
        """Forget the replies queued after the first `keep` (their uplink's writes were rolled back)."""
        del self._replies[keep:]

    def flush_replies(self) -> None:
        replies, self._replies = self._replies, []
        for topic, payload in replies:
            self.session.publish(topic, payload)

    def publish_due(self) -> int:
        return self.publisher.publish_due()

    def wake(self) -> None:
        """A handler queued a desired state: publish at the end of this batch, not at the next poll."""
        self._woken = True

    def notified(self) -> None:
        """From the LISTEN thread: a change was committed. The flag is seen between two chunks of uplinks; the
        item in an empty inbox ends a wait for uplinks."""
        self._notified.set()
        if self.session.inbox.empty():
            try:
                self.session.inbox.put_nowait(("wake", None, None))
            except queue.Full:
                pass

    def _due(self) -> bool:
        return self._woken or self._notified.is_set()

    def _chunk(self) -> int:
        if self._per_msg <= 0:
            return CHUNK
        return max(10, min(CHUNK, int(CHUNK_S / self._per_msg)))

    def seen(self, lock_id: str) -> None:
        self._seen[lock_id] = utcnow()

    def flush_seen(self) -> int:
        """Write the locks' last contact (Lock.last_seen_at) for every lock heard from since the last flush:
        one executemany UPDATE a second instead of a write per message."""
        if not self._seen:
            return 0
        rows = [{"lid": k, "at": v} for k, v in sorted(self._seen.items())]  # in id order, like the other writers
        self._seen.clear()
        t = Lock.__table__
        db.session.execute(t.update().where(t.c.id == sa.bindparam("lid")).values(last_seen_at=sa.bindparam("at")),
                           rows)
        db.session.commit()
        return len(rows)

    # ------------------------------------------------------------ uplink
    def handle(self, topic: str, payload: bytes) -> bool:
        """Verify and act on one uplink message, commit, send its replies. Never raises; True if accepted."""
        ok = inbound.handle(self, topic, payload)
        self._commit_and_ack([])
        return ok

    def handle_batch(self, messages: list[tuple[str, bytes]]) -> None:
        inbound.handle_batch(self, messages)

    # ------------------------------------------------------------ main loop
    def setup(self) -> None:
        from sqlalchemy import exists, select
        from ..models import Lock
        BridgeLockState.__table__.create(bind=db.engine, checkfirst=True)
        missing = db.session.scalars(select(Lock.id).where(~exists().where(BridgeLockState.lock_id == Lock.id))).all()
        for lid in missing:
            db.session.add(BridgeLockState(lock_id=lid, last_counter=0, seen_window=0, online=False))
        if missing:
            try:
                db.session.commit()
            except IntegrityError:
                db.session.rollback()  # another worker starting at the same time created them
        self.credentials.sync(force=True)

    def run(self, *, max_batch: int = 2000) -> None:
        self.setup()
        gc.collect()
        gc.freeze()  # the start-up objects (app, models, metadata) need no more collecting: shorter GC pauses
        _watch_gc()
        self.session.start()
        inbox = self.session.inbox
        listener = None
        if self.listen:
            listener = Listener(db.engine.url, self.notified)
            listener.start()
        last_expire = last_poll = last_metrics = last_seen = last_fw = 0.0
        last_dump = time.monotonic()
        try:
            while not self._stop.is_set():
                poll = 0.02 if self.publisher.backlog else self.poll
                timeout = 0.0 if self._due() else max(0.0, poll - (time.monotonic() - last_poll))
                if self.metrics.dirty:  # counters reach the metrics file within 0.2 s, even with no traffic
                    timeout = min(timeout, max(0.0, 0.2 - (time.monotonic() - last_metrics)))
                batch = []
                try:
                    batch.append(inbox.get(timeout=timeout))
                    while len(batch) < max_batch:
                        batch.append(inbox.get_nowait())
                except queue.Empty:
                    pass
                i = 0
                while i < len(batch):
                    # one transaction per chunk: the database's write lock (SQLite) is held briefly, and the
                    # desired states are published between chunks, not after a whole long batch
                    size = self._chunk()
                    part, i = batch[i:i + size], i + size
                    t0 = time.monotonic()
                    mids, msgs = [], []
                    for tag, topic, payload in part:
                        if topic is None:  # "connected" / "wake"
                            if tag == "connected":
                                self.metrics.add("connects")
                            self._woken = True
                            continue
                        msgs.append((topic, payload))
                        if tag is not None:
                            mids.append(tag)
                    if msgs:
                        self.handle_batch(msgs)
                        self._commit_and_ack(mids)
                        per = (time.monotonic() - t0) / len(msgs)
                        self._per_msg = per if self._per_msg <= 0 else 0.7 * self._per_msg + 0.3 * per
                    if self._due():
                        self._publish_due_safe()
                        last_poll = time.monotonic()
                    if self.metrics.dirty and time.monotonic() - last_metrics >= 0.2:  # fresh during a backlog too
                        last_metrics = time.monotonic()
                        self.metrics.write()
                now = time.monotonic()
                if self._due() or now - last_poll >= (0.02 if self.publisher.backlog else self.poll):
                    self._publish_due_safe()
                    last_poll = now
                if now - last_seen >= 1.0:
                    last_seen = now
                    self._safely("recording last contact", self.flush_seen)
                if now - last_expire >= self.expire_every:
                    last_expire = now
                    self._expire_due()
                self._safely("reconciling broker logins", self.credentials.sync)
                if now - last_fw >= 1.0:
                    last_fw = now
                    self._safely("announcing firmware releases", lambda: _firmware.announce_due(self))
                    self.flush_replies()
                # the clock read again: the publishing above may have waited seconds for a broker's PUBACK, and
                # its counters must not wait for one more attempt
                if self.metrics.dirty and time.monotonic() - last_metrics >= 0.2:
                    last_metrics = time.monotonic()
                    self.metrics.write()
                if now - last_dump >= 60.0:
                    last_dump = now
                    log.info("bridge counters: %s", self.metrics.summary())
        finally:
            log.info("bridge counters: %s", self.metrics.summary())
            self._safely("recording last contact", self.flush_seen)
            self.metrics.write()
            if listener is not None:
                listener.stop()
            self.session.stop()
            db.session.remove()

    def _commit_and_ack(self, mids: list) -> None:
        """Commit what the batch applied, then acknowledge it: a crash before the commit leaves the messages
        unacknowledged with the broker (sent again); after it, a resent copy is a replay (dropped, counted)."""
        if self._commit():
            self.flush_replies()
        else:
            self._replies.clear()  # what they answer was rolled back
        if mids:
            self.session.ack(mids)
            mids.clear()

    def _safely(self, what: str, fn) -> None:
        try:
            fn()
        except Exception:
            log.exception(what)
            db.session.rollback()

    def _commit(self) -> bool:
        try:
            db.session.commit()
            return True
        except Exception:
            log.exception("committing a batch")
            db.session.rollback()
            return False

    def _expire_due(self) -> None:
        from .. import domain
        try:
            changed = domain.expire_due()
            if changed:
                log.info("expired codes on %d locks", len(changed))
        except Exception:
            log.exception("expire_due")
            db.session.rollback()

    def _publish_due_safe(self) -> None:
        """Publish queued states until the queue is empty or the rate limit says wait (then poll soon)."""
        self._woken = False
        self._notified.clear()
        t0 = time.monotonic()
        n = 0
        try:
            while True:
                k = self.publisher.publish_due()
                n += k
                if k < self.publisher.batch:
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

    def stop(self) -> None:
        self._stop.set()


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


def from_config(app) -> Bridge:
    cfg, env = app.config, os.environ

    def get(name, default=None):
        return env.get(name, cfg.get(name, default))

    username = get("MQTT_USERNAME", "bridge")
    password = get("MQTT_PASSWORD")
    tls = str(get("MQTT_TLS", "0")).lower() in ("1", "true", "yes", "on")
    # KEYDROP_BRIDGE_WORKER (a slot: 0, 1, …): a stable client id per slot and a persistent session, so the broker
    # keeps what a killed worker had not acknowledged and hands it to the worker restarted in that slot. The id
    # is derived from SECRET_KEY (nobody can guess it to end the session). Without a slot: a random id per
    # process and a clean session (nothing is kept for a worker that never comes back).
    worker = get("KEYDROP_BRIDGE_WORKER")
    client_id, persistent = get("MQTT_CLIENT_ID"), worker is not None
    if persistent:
        base = client_id or "keydrop-bridge-" + hmac.new(str(cfg.get("SECRET_KEY", "")).encode(), b"bridge-client-id",
                                                         hashlib.sha256).hexdigest()[:16]
        client_id = f"{base}-{worker}"
    return Bridge(app, host=get("MQTT_HOST", "127.0.0.1"), port=int(get("MQTT_PORT", 1883)),
                  username=username, password=password, tls_ca=get("MQTT_CA_FILE") if tls else None,
                  shared=str(get("KEYDROP_BRIDGE_SHARED", "1")) in ("1", "true", "yes"),
                  poll=float(get("KEYDROP_BRIDGE_POLL")) if get("KEYDROP_BRIDGE_POLL") else None,
                  expire_every=float(get("KEYDROP_BRIDGE_EXPIRE_EVERY", 30)),
                  state_rate=float(get("KEYDROP_BRIDGE_STATE_RATE", 1000)),
                  client_id=client_id, persistent=persistent,
                  reconcile_every=float(get("KEYDROP_CREDENTIALS_RECONCILE_S", 300)),
                  metrics_file=get("KEYDROP_BRIDGE_METRICS"))


def main() -> int:
    from flask import current_app
    try:
        app = current_app._get_current_object()
        ctx = None
    except RuntimeError:
        from .. import create_app
        app = create_app()
        ctx = app.app_context()
        ctx.push()
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("keydrop").setLevel(logging.INFO)
    bridge = from_config(app)
    signal.signal(signal.SIGTERM, lambda *a: bridge.stop())
    try:
        bridge.run()
    except KeyboardInterrupt:
        pass
    finally:
        if ctx is not None:
            ctx.pop()
    return 0
