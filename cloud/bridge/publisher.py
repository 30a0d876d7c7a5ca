"""Desired-state publishing: claims rows of the change queue and publishes each lock's `state` (retained, QoS 1).

A worker claims a batch of queued locks (DELETE … RETURNING, with FOR UPDATE SKIP LOCKED on PostgreSQL so two
workers never claim the same row), publishes their current states and commits the deletion only once the broker
has acknowledged every publication (PUBACK): if the worker dies or the broker is away first, the rows come back
and are published again. A token bucket caps the states per second, so a storm (every lock reconnecting after a
broker restart, a mass expiry) is spread out instead of sent at once.
"""
from __future__ import annotations

import logging
import time

import sqlalchemy as sa

from .. import domain, statequeue
from ..extensions import db
from ..models import Lock, StateChange
from .envelope import Keyring, encode_state
from .metrics import Metrics

log = logging.getLogger("keydrop.bridge")
Q = StateChange


class TokenBucket:
    def __init__(self, rate: float, burst: int):
        self.rate, self.burst = rate, burst
        self.tokens = float(burst)
        self.t = time.monotonic()

    def available(self) -> int:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.t) * self.rate)
        self.t = now
        return int(self.tokens)

    def take(self, n: int) -> None:
        self.tokens -= n


class Publisher:
    def __init__(self, session, keyring: Keyring, metrics: Metrics, *, rate: float = 1000.0, batch: int = 200,
                 ack_timeout: float = 10.0):
        self.session, self.keyring, self.metrics = session, keyring, metrics
        self.bucket = TokenBucket(rate, batch)
        self.batch = batch
        self.ack_timeout = ack_timeout
        self._peek = sa.select(Q.id).order_by(Q.id).limit(1)
        self.backlog = False

    def _state_message(self, lock: Lock, state: dict):
        """(topic, payload, revision) of the lock's desired `state`, or None if it cannot be published."""
        try:
            body = encode_state(state)
        except ValueError as exc:
            # more codes than a lock holds: not published (the lock keeps its last set) until its next change
            self.metrics.add("state_too_large")
            log.error("lock %s: desired state of revision %s not published: %s", lock.id, state["revision"], exc)
            return None
        topic = f"lock/{lock.id}/down"
        return topic, self.keyring.get(lock.id).seal(topic, body), state["revision"]

    def has_work(self) -> bool:
        """One indexed read of the queue's head: the cost of an idle poll, whatever the fleet's size."""
        return db.session.execute(self._peek).first() is not None

    def publish_due(self) -> int:
        """Claim, publish and confirm up to one batch of queued states; returns how many were published."""
        self.backlog = False
        if not self.session.connected.is_set():
            return 0  # the rows stay queued until the broker is back
        budget = min(self.batch, self.bucket.available())
        if not self.has_work():
            db.session.rollback()  # end the read transaction (SQLite: release the shared lock)
            return 0
        if budget <= 0:
            db.session.rollback()
            self.backlog = True  # rate-limited with work waiting: the main loop comes back soon, not at the next poll
            return 0
        sqlite = db.session.get_bind().dialect.name == "sqlite"
        claimed = self._read(budget) if sqlite else self._claim(budget)
        infos = []
        try:
            msgs = []
            # the claimed locks and their codes in two queries, not two per lock
            ids = [lid for _row, lid in claimed]
            locks = db.session.scalars(sa.select(Lock).where(Lock.id.in_(ids))).all() if ids else []
            # every queued change refreshes the secret this worker seals with (a lock registered again under
            # its MAC has a new one; a decommissioned lock's id is queued too, and no longer found)
            for lock in locks:
                self.keyring.put(lock.id, bytes(lock.secret))
            for lid in set(ids) - {lock.id for lock in locks}:
                self.keyring.forget(lid)
            states = domain.desired_states(locks)
            for lock in locks:
                msg = self._state_message(lock, states[lock.id])
                if msg is not None:
                    msgs.append((lock.id, *msg))
            if sqlite:
                db.session.rollback()  # end the read before the broker is waited for (see _read)
            for _lid, topic, payload, _rev in msgs:
                infos.append(self.session.publish(topic, payload, retain=True))
            deadline = time.monotonic() + self.ack_timeout
            for info in infos:
                if info is not None:
                    info.wait_for_publish(max(0.0, deadline - time.monotonic()))
                    if not info.is_published():
                        raise TimeoutError("no PUBACK from the broker")
        except Exception as exc:
            db.session.rollback()  # the claimed rows return to the queue: published again later
            self.metrics.add("publish_unconfirmed")
            log.warning("%d desired states not confirmed by the broker, kept queued: %s", len(claimed), exc)
            return 0
        if sqlite:
            self._delete_read(claimed, {lid: rev for lid, _t, _p, rev in msgs})
        db.session.commit()
        self.bucket.take(len(claimed))
        self.backlog = len(claimed) == budget
        self.metrics.add("states_published", len(infos))
        return len(infos)

    def _claim(self, budget: int) -> list[tuple]:
        """PostgreSQL: delete the head rows in this transaction (row locks: the web's other writes go on); the
        deletion commits once the broker confirmed, and comes back with a rollback."""
        head = sa.select(Q.id).order_by(Q.id).limit(budget).with_for_update(skip_locked=True)
        return [tuple(r) for r in db.session.execute(
            sa.delete(Q).where(Q.id.in_(head.scalar_subquery())).returning(Q.id, Q.lock_id))]

    def _read(self, budget: int) -> list[tuple]:
        """SQLite: read the head rows only. Its write lock covers the whole database, so a DELETE held open while
        the broker is waited for (up to ack_timeout, seconds when a broker node dies) would stall every write of
        the web and the API past their busy timeout. The rows are deleted after the PUBACKs by the ids read
        here; a change made during the wait gave its lock's row a new id (statequeue), so it stays queued."""
        return [tuple(r) for r in db.session.execute(sa.select(Q.id, Q.lock_id).order_by(Q.id).limit(budget))]

    def _delete_read(self, claimed: list[tuple], published: dict) -> None:
        """Delete the rows read, then queue again each lock whose desired revision moved past the one published:
        without a claim, two SQLite workers may publish one lock's states and an older one may reach the broker
        last (retained); the worker that published it sees that here and the current state is sent again."""
        db.session.execute(sa.delete(Q).where(Q.id.in_([row_id for row_id, _lid in claimed])))
        if published:
            now = db.session.execute(sa.select(Lock.id, Lock.desired_revision).where(Lock.id.in_(list(published))))
            statequeue.enqueue(sorted(lid for lid, rev in now if rev != published[lid]))
