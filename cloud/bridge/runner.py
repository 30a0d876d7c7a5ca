"""The bridge process: wires session, verification, dispatch and publisher together and runs the main loop."""
from __future__ import annotations

import gc
import logging
import os
import queue
import secrets
import signal
import threading
import time
from typing import Optional

from ..extensions import db
from ..models import BridgeLockState
from .credentials import BrokerCredentials
from . import firmware as _firmware  # noqa: F401  (registers the firmware uplinks)
from .dispatch import HANDLERS, dispatch
from .envelope import Keyring
from .metrics import Metrics
from .publisher import Publisher
from .session import Session
from .uplink import Drop, verify

log = logging.getLogger("keydrop.bridge")


class Bridge:
    def __init__(self, app, *, host: str, port: int, username: Optional[str], password: Optional[str],
                 tls_ca: Optional[str] = None, shared: bool = False, poll: float = 0.05,
                 expire_every: float = 30.0, client_id: Optional[str] = None,
                 reconcile_every: float = 300.0, metrics_file: Optional[str] = None):
        self.app = app
        self.poll = poll
        self.expire_every = expire_every
        self.metrics = Metrics(metrics_file)
        self.keyring = Keyring()
        # the client id is unguessable and unique per worker: nobody can end a worker's session by reusing it
        self.session = Session(self.metrics, host=host, port=port, username=username, password=password,
                               client_id=client_id or f"keydrop-bridge-{secrets.token_hex(8)}", tls_ca=tls_ca,
                               shared=shared)
        self.publisher = Publisher(self.session, self.keyring, self.metrics)
        self.credentials = BrokerCredentials(app.config, every=reconcile_every)
        self.acked: dict[str, int] = {}  # lock id → acked revision the cloud recorded (skips re-ack writes)
        self._stop = threading.Event()

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
        """Publish a signed, non-retained downlink to one lock (time, logack)."""
        topic = f"lock/{lock_id}/down"
        self.session.publish(topic, self.keyring.get(lock_id).seal(topic, obj))

    def publish_due(self) -> int:
        return self.publisher.publish_due()

    # ------------------------------------------------------------ uplink
    def handle(self, topic: str, payload: bytes) -> bool:
        """Verify and act on one uplink message. Never raises; returns True if accepted."""
        lock_id = "?"
        try:
            up = verify(topic, payload, self.keyring, HANDLERS)
            lock_id = up.lock_id
            dispatch(self, up)
            return True
        except Drop as d:
            self.metrics.drop(d.reason, d.lock_id, d.level)
        except Exception:
            log.exception("handling an uplink from %s", lock_id)
            db.session.rollback()
            self.metrics.drop("error", lock_id, level=0)
        return False

    # ------------------------------------------------------------ main loop
    def setup(self) -> None:
        from sqlalchemy import exists, select
        from ..models import Lock
        BridgeLockState.__table__.create(bind=db.engine, checkfirst=True)
        missing = db.session.scalars(select(Lock.id).where(~exists().where(BridgeLockState.lock_id == Lock.id))).all()
        for lid in missing:
            db.session.add(BridgeLockState(lock_id=lid, last_counter=0, published_revision=0, online=False))
        if missing:
            db.session.commit()
        self.credentials.sync(force=True)

    def run(self, *, max_batch: int = 2000) -> None:
        self.setup()
        gc.collect()
        gc.freeze()  # the start-up objects (app, models, metadata) need no more collecting: shorter GC pauses
        _watch_gc()
        self.session.start()
        inbox = self.session.inbox
        last_expire = last_poll = last_metrics = 0.0
        last_dump = time.monotonic()
        try:
            while not self._stop.is_set():
                timeout = max(0.0, self.poll - (time.monotonic() - last_poll))
                batch = []
                try:
                    batch.append(inbox.get(timeout=timeout))
                    while len(batch) < max_batch:
                        batch.append(inbox.get_nowait())
                except queue.Empty:
                    pass
                t_commit = time.monotonic()
                for kind, topic, payload in batch:
                    if kind == "connected":
                        self.metrics.add("connects")
                        self.publisher.republish_all()
                    else:
                        self.handle(topic, payload)
                    if time.monotonic() - t_commit >= 0.02:
                        # hold the database's write lock briefly: the web's transactions wait for it
                        self._commit()
                        t_commit = time.monotonic()
                    if time.monotonic() - last_poll >= self.poll:
                        # a long batch must not delay the desired states: publish in between
                        self._commit()
                        last_poll = time.monotonic()
                        self._publish_due_safe()
                if batch:
                    self._commit()
                    dt = time.monotonic() - t_commit
                    if dt > 0.25:
                        log.warning("a batch of %d uplinks took %.0f ms after its last commit", len(batch), dt * 1000)
                now = time.monotonic()
                if now - last_poll >= self.poll:
                    last_poll = now
                    self._publish_due_safe()
                if now - last_expire >= self.expire_every:
                    last_expire = now
                    self._expire_due()
                self.credentials.sync()
                if self.metrics.dirty and now - last_metrics >= 0.2:
                    last_metrics = now
                    self.metrics.write()
                if now - last_dump >= 60.0:
                    last_dump = now
                    log.info("bridge counters: %s", self.metrics.summary())
        finally:
            log.info("bridge counters: %s", self.metrics.summary())
            self.metrics.write()
            self.session.stop()
            db.session.remove()

    def _commit(self) -> None:
        try:
            db.session.commit()
        except Exception:
            log.exception("committing a batch")
            db.session.rollback()

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
        t0 = time.monotonic()
        p = self.publisher
        try:
            n = p.publish_due()
            dt = time.monotonic() - t0
            if dt > 0.25:
                log.warning("publishing %d desired states took %.0f ms (query %.0f, push %.0f, commit %.0f)", n,
                            dt * 1000, (p.t_query - t0) * 1000, (p.t_pushed - p.t_query) * 1000,
                            (time.monotonic() - p.t_pushed) * 1000)
        except Exception:
            log.exception("polling desired states")
            db.session.rollback()

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
    return Bridge(app, host=get("MQTT_HOST", "127.0.0.1"), port=int(get("MQTT_PORT", 1883)),
                  username=username, password=password, tls_ca=get("MQTT_CA_FILE") if tls else None,
                  shared=str(get("KEYDROP_BRIDGE_SHARED", "0")) in ("1", "true", "yes"),
                  poll=float(get("KEYDROP_BRIDGE_POLL", 0.05)),
                  expire_every=float(get("KEYDROP_BRIDGE_EXPIRE_EVERY", 30)),
                  client_id=get("MQTT_CLIENT_ID"),
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
