"""The bridge process: the Bridge wires session, verification, dispatch and publisher together and holds what
the handlers reach for (the keys, replies waiting for their commit, last-contact times); loop.py runs it.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import signal
from typing import Optional

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError

from ..config import is_on
from ..extensions import db
from ..sqlsets import among
from ..models import BridgeLockState, Lock
from ..timeutil import UTCDateTime, utcnow
from .credentials import BrokerCredentials
from . import inbound
from .envelope import Keyring
from .loop import MainLoop
from .metrics import Metrics
from .publisher import Publisher
from .session import Session

log = logging.getLogger("keydrop.bridge")

# Lock.last_seen_at for many locks at once (PostgreSQL); the times bound as the column's own type (naive UTC)
_SEEN_PG = sa.text(
    "UPDATE lock SET last_seen_at = s.at FROM unnest(CAST(:lids AS varchar[]), CAST(:ats AS timestamp[])) AS s(lid, at) "
    "WHERE lock.id = s.lid").bindparams(sa.bindparam("ats", type_=postgresql.ARRAY(UTCDateTime())))


class Bridge:
    """One bridge worker: its MQTT session, keys, publisher and counters, and what a handler of an uplink
    reaches for (reply, seen, wake, the acked revisions); its main loop is `self.loop`."""

    def __init__(self, app, *, host: str, port: int, username: Optional[str], password: Optional[str],
                 tls_ca: Optional[str] = None, shared: bool = True, poll: Optional[float] = None,
                 expire_every: float = 30.0, client_id: Optional[str] = None,
                 reconcile_every: float = 300.0, metrics_file: Optional[str] = None, state_rate: float = 1000.0,
                 persistent: bool = False):
        self.app = app
        self.listen = db.engine.dialect.name == "postgresql"  # LISTEN/NOTIFY wakes it
        # with LISTEN/NOTIFY the poll is only a safety net; on SQLite it is how changes are found
        self.loop = MainLoop(self, poll=poll if poll is not None else (1.0 if self.listen else 0.05),
                             expire_every=expire_every)
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
        self.fw_announced: dict[tuple[str, int], float] = {}  # (lock id, rollout id) -> when last announced

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
        self.loop.wake()

    def seen(self, *lock_ids: str) -> None:
        """These locks were heard from now (one clock read for all of them)."""
        now = utcnow()
        for lock_id in lock_ids:
            self._seen[lock_id] = now

    def flush_seen(self) -> int:
        """Write the locks' last contact (Lock.last_seen_at) for every lock heard from since the last flush, once
        a second instead of a write per message: on PostgreSQL the rows locked in id order (like the other
        writers: two workers cannot deadlock) and written by one UPDATE from two arrays (an executemany is one
        statement per row on the server: 2,000 locks heard in a flood cost the bridge a sixth of its time),
        elsewhere an executemany in id order."""
        if not self._seen:
            return 0
        seen, self._seen = self._seen, {}
        ids = sorted(seen)
        t = Lock.__table__
        try:
            if db.session.get_bind().dialect.name == "postgresql":
                db.session.execute(sa.select(t.c.id).where(among(t.c.id, ids))
                                   .order_by(t.c.id).with_for_update())
                db.session.execute(_SEEN_PG, {"lids": ids, "ats": [seen[k] for k in ids]})
            else:
                db.session.execute(t.update().where(t.c.id == sa.bindparam("lid"))
                                   .values(last_seen_at=sa.bindparam("at")), [{"lid": k, "at": seen[k]} for k in ids])
            db.session.commit()
        except BaseException:
            for k, v in seen.items():  # written at the next flush (a newer time heard meanwhile wins)
                self._seen.setdefault(k, v)
            raise
        return len(ids)

    # ------------------------------------------------------------ uplink
    def handle(self, topic: str, payload: bytes) -> bool:
        """Verify and act on one uplink message, commit, send its replies. Never raises; True if accepted."""
        ok = inbound.handle(self, topic, payload)
        self._commit_and_ack([])
        return ok

    def handle_batch(self, messages: list[tuple[str, bytes]]) -> "inbound.Chunk":
        """Apply and commit a chunk of uplinks; the Chunk says what is done and what the database did not take."""
        return inbound.handle_batch(self, messages)

    def apply_chunk(self, records: list) -> tuple[list, "inbound.Chunk"]:
        """Apply a chunk of uplinks (mid, topic, payload, …) as one transaction, send the replies of what
        committed, acknowledge what is done (applied and committed, or dropped); returns the records the database
        did not take, in order, unacknowledged (the broker keeps them for this session), and the Chunk."""
        chunk = inbound.handle_batch(self, [(r[1], r[2]) for r in records])
        self.flush_replies()  # what is left answers committed work (a rollback dropped the others)
        held = chunk.held()
        if held:
            keep = set(held)
            mids = [r[0] for i, r in enumerate(records) if r[0] is not None and i not in keep]
        else:
            mids = [r[0] for r in records if r[0] is not None]
        if mids:
            self.session.ack(mids)
        return [records[i] for i in held], chunk

    # ------------------------------------------------------------ start, run, stop
    def setup(self) -> None:
        BridgeLockState.__table__.create(bind=db.engine, checkfirst=True)
        missing = db.session.scalars(sa.select(Lock.id).where(
            ~sa.exists().where(BridgeLockState.lock_id == Lock.id))).all()
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
        self.loop.run(max_batch)

    def stop(self) -> None:
        self.loop.stop()

    def _commit_and_ack(self, mids: list) -> None:
        """Commit what was applied, then acknowledge it: a crash before the commit leaves the messages
        unacknowledged with the broker (sent again); after it, a resent copy is a replay (dropped, counted). A
        failed commit acknowledges nothing (the main loop's chunks: apply_chunk)."""
        if self._commit():
            self.flush_replies()
            if mids:
                self.session.ack(mids)
        else:
            self._replies.clear()  # what they answer was rolled back
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


def from_config(app) -> Bridge:
    cfg, env = app.config, os.environ

    def get(name, default=None):
        return env.get(name, cfg.get(name, default))

    username = get("MQTT_USERNAME", "bridge")
    password = get("MQTT_PASSWORD")
    tls = is_on(get("MQTT_TLS", "0"))
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
                  shared=is_on(get("KEYDROP_BRIDGE_SHARED", "1")),
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
