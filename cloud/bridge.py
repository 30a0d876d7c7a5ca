"""MQTT bridge between the locks and the cloud: `flask --app cloud bridge` (docs/protocol.md).

- Subscribes to every lock's uplink (`lock/+/up`, or `$share/bridge/lock/+/up` with KEYDROP_BRIDGE_SHARED=1
  so several workers share the load), verifies each message (size, HMAC over the exact bytes, version,
  counter strictly above the last accepted one, kept in the database) and calls the domain operations.
  Bad input is dropped, counted and logged (lock id + reason, never secrets or payloads); it never raises.
- Publishes a lock's desired state (retained, QoS 1) whenever its desired_revision is above the revision the
  bridge last published for it: the web process bumps desired_revision in its own transaction and the bridge
  notices by polling every KEYDROP_BRIDGE_POLL seconds (default 0.05), so publishing adds at most that much.
- Calls expire_due() periodically; keeps the broker's password file / ACL in sync with the registered locks
  when it manages the broker (MQTT_BROKER_DIR, MQTT_BROKER_PIDFILE).

Threads: paho's network thread only queues incoming messages; the main thread does all database work, in
batches (one commit per batch for the counters of messages that need no domain write).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import queue
import secrets
import signal
import ssl
import struct
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Optional

import sqlalchemy as sa

from .domain import MAX_LIVE_CODES
from .extensions import db
from .models import BridgeLockState  # defined with the other models (the web reads `online`)
from .timeutil import utcnow

log = logging.getLogger("keydrop.bridge")

V = 1
PREFIX = b"KD1\x00"
SIG_LEN = 64
MAX_UP = 4096
MAX_DOWN = 12288  # a full state (200 codes) is 11.9 KB
MAX_CODES = MAX_LIVE_CODES  # the protocol's limit; generate_code refuses beyond it
UP_TYPES = ("hello", "ack", "log", "rotate", "will")


# ---------------------------------------------------------------- envelope (same as device/protocol.py)


class Envelope:
    """HMAC-SHA256(secret, b"KD1\\0" + topic + b"\\0" + body); payload = hex(mac) + body."""

    __slots__ = ("_base",)

    def __init__(self, secret: bytes):
        self._base = hmac.new(secret, PREFIX, hashlib.sha256)

    def mac(self, topic: bytes, body: bytes) -> bytes:
        h = self._base.copy()
        h.update(topic)
        h.update(b"\x00")
        h.update(body)
        return h.digest()

    def seal(self, topic: str, obj: dict) -> bytes:
        body = json.dumps(obj, separators=(",", ":")).encode()
        return self.mac(topic.encode(), body).hex().encode() + body

    def open(self, topic: str, payload: bytes) -> dict:
        """Raises ValueError(reason) for: malformed, bad_signature, bad_version."""
        if len(payload) < SIG_LEN + 2:
            raise ValueError("malformed")
        body = payload[SIG_LEN:]
        try:
            sig = bytes.fromhex(payload[:SIG_LEN].decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raise ValueError("malformed")
        if not hmac.compare_digest(sig, self.mac(topic.encode(), body)):
            raise ValueError("bad_signature")
        try:
            obj = json.loads(body)
        except (UnicodeDecodeError, ValueError):
            raise ValueError("malformed")
        if not isinstance(obj, dict):
            raise ValueError("malformed")
        if obj.get("v") != V:
            raise ValueError("bad_version")
        return obj


_T = BridgeLockState.__table__
_COUNTER_UPDATE = _T.update().where(_T.c.lock_id == sa.bindparam("lid"), _T.c.last_counter < sa.bindparam("n")) \
    .values(last_counter=sa.bindparam("n"))


def encode_state(state: dict) -> dict:
    """domain.desired_state() → the `state` body (digests packed in one base64 string)."""
    codes = state["codes"]
    if len(codes) > MAX_CODES:
        raise ValueError(f"{len(codes)} codes exceed the protocol's {MAX_CODES}")
    recs = b"".join(struct.pack(">32sIII", c["digest"], int(c["id"]), int(c["from"]), int(c["until"]))
                    for c in codes)
    return {
        "v": V, "t": "state", "rev": int(state["revision"]),
        "n": len(codes), "c": base64.b64encode(recs).decode(),
        "backup": base64.b64encode(state["backup_digest"]).decode() if state.get("backup_digest") else None,
    }


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


# ---------------------------------------------------------------- the bridge


class Bridge:
    def __init__(self, app, *, host: str, port: int, username: Optional[str], password: Optional[str],
                 tls_ca: Optional[str] = None, shared: bool = False, poll: float = 0.05,
                 expire_every: float = 30.0, client_id: Optional[str] = None,
                 broker_dir: Optional[str] = None, broker_pidfile: Optional[str] = None,
                 metrics_file: Optional[str] = None):
        self.app = app
        self.host, self.port = host, port
        self.username, self.password = username, password
        self.tls_ca = tls_ca
        self.shared = shared
        self.poll = poll
        self.expire_every = expire_every
        self.client_id = client_id or f"keydrop-bridge-{os.getpid()}"
        self.broker_dir = broker_dir
        self.broker_pidfile = broker_pidfile
        self.metrics_file = metrics_file
        self.counts: Counter = Counter()
        self.inbox: queue.Queue = queue.Queue(maxsize=100_000)
        self._env: dict[str, Envelope] = {}
        self._unknown: dict[str, float] = {}
        self._acked: dict[str, int] = {}
        self._t_query = self._t_pushed = 0.0
        self._log_budget: dict[str, tuple[float, int]] = {}
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._auth_sig = None
        self._metrics_dirty = False
        self.client = None

    # ------------------------------------------------------------ MQTT plumbing
    def _make_client(self):
        import paho.mqtt.client as mqtt
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=True,
                        protocol=mqtt.MQTTv311)
        if self.username:
            c.username_pw_set(self.username, self.password)
        if self.tls_ca:
            ctx = ssl.create_default_context(cafile=self.tls_ca)
            c.tls_set_context(ctx)
        c.max_inflight_messages_set(200)
        c.max_queued_messages_set(0)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.reconnect_delay_set(0.2, 5)
        return c

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            log.warning("broker refused the bridge: %s", reason_code)
            return
        topic = "$share/bridge/lock/+/up" if self.shared else "lock/+/up"
        client.subscribe(topic, qos=1)
        self._connected.set()
        log.info("bridge connected to %s:%s, subscribed to %s", self.host, self.port, topic)
        self.inbox.put(("connected", None, None))

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self._connected.clear()
        log.warning("bridge disconnected from the broker (%s)", reason_code)

    def _on_message(self, client, userdata, msg):
        try:
            self.inbox.put_nowait(("msg", msg.topic, msg.payload))
        except queue.Full:
            self.counts["overload"] += 1

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        if len(payload) > MAX_DOWN:
            self.counts["down_oversize"] += 1
            log.error("not publishing %s: %d bytes exceed %d", topic, len(payload), MAX_DOWN)
            return
        self.client.publish(topic, payload, qos=1, retain=retain)

    # ------------------------------------------------------------ helpers
    def count(self, reason: str, lock_id: str = "?", level=logging.WARNING) -> None:
        self.counts[reason] += 1
        self._metrics_dirty = True
        if not level:
            return
        # at most 20 lines per reason and minute: a flood of garbage must not flood the log (counted anyway)
        now = time.monotonic()
        start, n = self._log_budget.get(reason, (now, 0))
        if now - start >= 60.0:
            if n > 20:
                log.warning("%d more uplinks dropped for %s in the last minute", n - 20, reason)
            start, n = now, 0
        self._log_budget[reason] = (start, n + 1)
        if n < 20:
            log.log(level, "dropped uplink from %s: %s", lock_id, reason)

    def envelope(self, lock_id: str) -> Optional[Envelope]:
        env = self._env.get(lock_id)
        if env is not None:
            return env
        t = self._unknown.get(lock_id)
        if t is not None and time.monotonic() - t < 5.0:
            return None
        from .models import Lock
        secret = db.session.scalar(sa.select(Lock.secret).where(Lock.id == lock_id))
        if secret is None:
            self._unknown[lock_id] = time.monotonic()
            if len(self._unknown) > 10_000:
                self._unknown.clear()
            return None
        env = self._env[lock_id] = Envelope(bytes(secret))
        return env

    def _lock(self, lock_id: str):
        from .models import Lock
        return db.session.get(Lock, lock_id)

    def _ensure_state_rows(self) -> None:
        from .models import Lock
        missing = db.session.scalars(sa.select(Lock.id).where(
            ~sa.exists().where(BridgeLockState.lock_id == Lock.id))).all()
        for lid in missing:
            db.session.add(BridgeLockState(lock_id=lid, last_counter=0, published_revision=0, online=False))
        if missing:
            db.session.commit()

    # ------------------------------------------------------------ uplink
    def handle(self, topic: str, payload: bytes) -> bool:
        """Verify and act on one uplink message. Never raises; returns True if accepted."""
        parts = topic.split("/")
        if len(parts) != 3 or parts[0] != "lock" or parts[2] != "up" or not parts[1]:
            self.count("malformed", "?")
            return False
        lock_id = parts[1]
        if len(payload) > MAX_UP:
            self.count("oversize", lock_id)
            return False
        try:
            env = self.envelope(lock_id)
        except Exception:
            log.exception("looking up lock %s", lock_id)
            db.session.rollback()
            self.count("error", lock_id, level=0)
            return False
        if env is None:
            self.count("unknown_lock", lock_id)
            return False
        try:
            msg = env.open(topic, payload)
        except ValueError as exc:
            self.count(str(exc), lock_id)
            return False
        t = msg.get("t")
        n = msg.get("n")
        if t not in UP_TYPES:
            self.count("unknown_type", lock_id)
            return False
        if not _is_int(n) or n <= 0 or n >= 2 ** 62:
            self.count("malformed", lock_id)
            return False
        try:
            return self._dispatch(lock_id, t, n, msg)
        except Exception:
            log.exception("handling %s from %s", t, lock_id)
            db.session.rollback()
            self.count("error", lock_id, level=0)
            return False

    def _dispatch(self, lock_id: str, t: str, n: int, msg: dict) -> bool:
        from . import domain
        S = BridgeLockState
        if t == "will":
            # accepted once, only for the session announced by the last hello (docs/protocol.md)
            r = db.session.execute(sa.update(S).where(S.lock_id == lock_id, S.will_counter == n)
                                   .values(will_counter=None, online=False, online_changed_at=utcnow()))
            if r.rowcount != 1:
                db.session.rollback()
                self.count("stale_will", lock_id, level=logging.INFO)
                return False
            db.session.commit()
            self.counts["ok_will"] += 1
            log.info("lock %s is offline (last will)", lock_id)
            return True

        # the counter must grow: one conditional UPDATE (Core, no ORM bookkeeping), atomic across workers
        r = db.session.execute(_COUNTER_UPDATE, {"lid": lock_id, "n": n})
        if r.rowcount != 1:
            exists = db.session.scalar(sa.select(S.lock_id).where(S.lock_id == lock_id))
            if exists is None:
                db.session.add(S(lock_id=lock_id, last_counter=n, published_revision=0, online=False))
                db.session.flush()
            else:
                db.session.rollback()
                self.count("replay", lock_id)
                return False

        if t == "ack":
            rev = msg.get("rev")
            if not _is_int(rev):
                db.session.rollback()
                self.count("malformed", lock_id)
                return False
            # a re-ack of what the cloud already recorded (e.g. the retained state after a reconnect) needs
            # no domain write; acked revisions only grow, so a stale cache only costs a domain call
            if rev > self._acked.get(lock_id, -1):
                lock = self._lock(lock_id)
                domain.codeset_acknowledged(lock, rev)
                self._acked[lock_id] = lock.acked_revision
            self.counts["ok_ack"] += 1
            self._metrics_dirty = True
            return True
        lock = self._lock(lock_id)
        if t == "hello":
            fw, boot, ltime, rev, nonce, will = (msg.get("fw"), msg.get("boot"), msg.get("time"),
                                                 msg.get("rev"), msg.get("nonce"), msg.get("will"))
            if not (isinstance(fw, str) and _is_int(boot) and (ltime is None or _is_int(ltime))
                    and _is_int(rev) and isinstance(nonce, str) and len(nonce) <= 64
                    and (will is None or _is_int(will))):
                db.session.rollback()
                self.count("malformed", lock_id)
                return False
            db.session.execute(sa.update(S).where(S.lock_id == lock_id).values(
                will_counter=will, online=True, online_changed_at=utcnow()))
            res = domain.lock_hello(lock, firmware=fw, boot_count=boot, lock_time=ltime, revision=rev)
            env = self._env[lock_id]
            self.publish(f"lock/{lock_id}/down",
                         env.seal(f"lock/{lock_id}/down", {"v": V, "t": "time", "now": int(time.time()),
                                                            "nonce": nonce}))
            if res.get("push"):
                self.push_state(lock)  # also re-creates a retained message lost by a broker restart
        elif t == "log":
            events = msg.get("ev")
            if not isinstance(events, list) or not events or len(events) > 64 or not all(
                    isinstance(e, dict) and _is_int(e.get("seq")) and e["seq"] > 0 for e in events):
                db.session.rollback()
                self.count("malformed", lock_id)
                return False
            norm = []
            for e in events:
                ev = dict(e)
                ts = ev.pop("ts", ev.get("t"))
                ev["t"] = ts if _is_int(ts) else None
                ev["kind"] = str(ev.get("kind", "unknown"))[:32]
                if not _is_int(ev.get("code_id")):
                    ev.pop("code_id", None)
                norm.append(ev)
            new = domain.record_events(lock, norm)
            self.counts["events_new"] += new
            top = max(e["seq"] for e in norm)
            env = self._env[lock_id]
            self.publish(f"lock/{lock_id}/down",
                         env.seal(f"lock/{lock_id}/down", {"v": V, "t": "logack", "seq": top}))
        elif t == "rotate":
            fu = msg.get("first_used")
            if fu is not None and not _is_int(fu):
                db.session.rollback()
                self.count("malformed", lock_id)
                return False
            domain.rotate_backup(lock, first_used_at=fu)
            self.push_state(lock)
        self.counts["ok_" + t] += 1
        self._metrics_dirty = True
        return True

    # ------------------------------------------------------------ downlink
    def push_state(self, lock, *, commit: bool = True) -> None:
        from . import domain
        state = domain.desired_state(lock)
        topic = f"lock/{lock.id}/down"
        S = BridgeLockState
        try:
            body = encode_state(state)
        except ValueError as exc:
            # more codes than a lock holds: not published (the lock keeps its last set); retried at the
            # lock's next change, not at every poll
            self.counts["state_too_large"] += 1
            log.error("lock %s: desired state of revision %s not published: %s", lock.id, state["revision"], exc)
            db.session.execute(sa.update(S).where(S.lock_id == lock.id).values(published_revision=state["revision"]))
            if commit:
                db.session.commit()
            return
        env = self._env.get(lock.id) or self.envelope(lock.id)
        self.publish(topic, env.seal(topic, body), retain=True)
        r = db.session.execute(sa.update(S).where(S.lock_id == lock.id).values(
            published_revision=body["rev"]))
        if r.rowcount == 0:
            db.session.add(S(lock_id=lock.id, last_counter=0, published_revision=body["rev"], online=False))
        if commit:
            db.session.commit()
        self.counts["states_published"] += 1
        self._metrics_dirty = True

    def publish_due(self) -> int:
        from .models import Lock
        S = BridgeLockState
        rows = db.session.execute(
            sa.select(Lock.id).join(S, S.lock_id == Lock.id, isouter=True).where(
                Lock.desired_revision > sa.func.coalesce(S.published_revision, 0))).scalars().all()
        self._t_query = time.monotonic()
        for lid in rows:
            try:
                self.push_state(self._lock(lid), commit=False)
            except Exception:
                log.exception("publishing the desired state of %s", lid)
                db.session.rollback()
                self.counts["publish_error"] += 1
        self._t_pushed = time.monotonic()
        if rows:
            db.session.commit()  # one commit for the published revisions of the whole poll
        return len(rows)

    # ------------------------------------------------------------ broker auth files
    def sync_auth(self, force: bool = False) -> None:
        if not self.broker_dir:
            return
        from . import broker
        from .models import Lock
        sig = db.session.execute(sa.select(sa.func.count(Lock.id), sa.func.max(Lock.registered_at))).one()
        sig = tuple(sig)
        if sig == self._auth_sig and not force:
            return
        users = {lid: broker.lock_mqtt_password(bytes(sec))
                 for lid, sec in db.session.execute(sa.select(Lock.id, Lock.secret))}
        users[self.username] = self.password
        broker.write_auth(Path(self.broker_dir), users, self.username)
        broker.hup(self.broker_pidfile)
        self._auth_sig = sig
        log.info("broker credentials written for %d locks", len(users) - 1)

    def write_metrics(self) -> None:
        self._metrics_dirty = False
        if not self.metrics_file:
            return
        tmp = self.metrics_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump(dict(self.counts), f)
        os.replace(tmp, self.metrics_file)

    # ------------------------------------------------------------ main loop
    def setup(self) -> None:
        BridgeLockState.__table__.create(bind=db.engine, checkfirst=True)
        self._ensure_state_rows()
        self.sync_auth(force=True)

    def run(self, *, max_batch: int = 2000) -> None:
        self.setup()
        import gc
        gc.collect()
        gc.freeze()  # the start-up objects (app, models, metadata) need no more collecting: shorter GC pauses
        _watch_gc()
        self.client = self._make_client()
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()
        last_expire = 0.0
        last_poll = 0.0
        last_auth = 0.0
        last_dump = time.monotonic()
        last_metrics = 0.0
        try:
            while not self._stop.is_set():
                timeout = max(0.0, self.poll - (time.monotonic() - last_poll))
                batch = []
                try:
                    batch.append(self.inbox.get(timeout=timeout))
                    while len(batch) < max_batch:
                        batch.append(self.inbox.get_nowait())
                except queue.Empty:
                    pass
                t_commit = time.monotonic()
                for kind, topic, payload in batch:
                    if kind == "connected":
                        self.counts["connects"] += 1
                        self._metrics_dirty = True
                        self._republish_all()
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
                    try:
                        from . import domain
                        changed = domain.expire_due()
                        if changed:
                            log.info("expired codes on %d locks", len(changed))
                    except Exception:
                        log.exception("expire_due")
                        db.session.rollback()
                if self.broker_dir and now - last_auth >= 1.0:
                    last_auth = now
                    try:
                        self.sync_auth()
                    except Exception:
                        log.exception("syncing broker credentials")
                        db.session.rollback()
                if self._metrics_dirty and now - last_metrics >= 0.2:
                    last_metrics = now
                    self.write_metrics()
                if now - last_dump >= 60.0:
                    last_dump = now
                    log.info("bridge counters: %s", json.dumps(dict(self.counts), sort_keys=True))
        finally:
            log.info("bridge counters: %s", json.dumps(dict(self.counts), sort_keys=True))
            self.write_metrics()
            self.client.loop_stop()
            try:
                self.client.disconnect()
            except Exception:
                pass
            db.session.remove()

    def _commit(self) -> None:
        try:
            db.session.commit()
        except Exception:
            log.exception("committing a batch")
            db.session.rollback()

    def _publish_due_safe(self) -> None:
        t0 = time.monotonic()
        try:
            n = self.publish_due()
            dt = time.monotonic() - t0
            if dt > 0.25:
                log.warning("publishing %d desired states took %.0f ms (query %.0f, push %.0f, commit %.0f)", n,
                            dt * 1000, (self._t_query - t0) * 1000, (self._t_pushed - self._t_query) * 1000,
                            (time.monotonic() - self._t_pushed) * 1000)
        except Exception:
            log.exception("polling desired states")
            db.session.rollback()

    def _republish_all(self) -> None:
        """After (re)connecting: the broker may have restarted without persistence and lost the retained
        states, so publish every lock's desired state again on the next poll."""
        db.session.execute(sa.update(BridgeLockState).values(published_revision=0))
        db.session.commit()

    def stop(self) -> None:
        self._stop.set()


def _watch_gc() -> None:
    """Log garbage-collector pauses over 100 ms (they delay every message behind them)."""
    import gc
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

    broker_dir = get("MQTT_BROKER_DIR")
    username = get("MQTT_USERNAME", "bridge")
    password = get("MQTT_PASSWORD")
    if password is None and broker_dir:
        password = secrets.token_hex(16)  # we write the password file ourselves
    tls = str(get("MQTT_TLS", "0")).lower() in ("1", "true", "yes", "on")
    return Bridge(app, host=get("MQTT_HOST", "127.0.0.1"), port=int(get("MQTT_PORT", 1883)),
                  username=username, password=password, tls_ca=get("MQTT_CA_FILE") if tls else None,
                  shared=str(get("KEYDROP_BRIDGE_SHARED", "0")) in ("1", "true", "yes"),
                  poll=float(get("KEYDROP_BRIDGE_POLL", 0.05)),
                  expire_every=float(get("KEYDROP_BRIDGE_EXPIRE_EVERY", 30)),
                  client_id=get("MQTT_CLIENT_ID"), broker_dir=broker_dir,
                  broker_pidfile=get("MQTT_BROKER_PIDFILE"), metrics_file=get("KEYDROP_BRIDGE_METRICS"))


def main() -> int:
    from flask import current_app
    try:
        app = current_app._get_current_object()
        ctx = None
    except RuntimeError:
        from . import create_app
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
