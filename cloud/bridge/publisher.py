"""Desired-state publishing: claims rows of the change queue and publishes each lock's `state` (retained, QoS 1).

A worker claims a batch of queued locks, publishes their current states and deletes the rows only once the broker
has acknowledged every publication (PUBACK): if the worker dies or the broker is away first, the rows come back
and are published again. Two workers never claim the same row. PostgreSQL: DELETE … RETURNING of the head rows
FOR UPDATE SKIP LOCKED, committed after the PUBACKs (a rollback brings the rows back). SQLite, whose write lock
covers the whole database and cannot be held while the broker is waited for: the head rows not claimed are marked
with this turn's token and a deadline in one short write, and after the PUBACKs the rows still carrying that token
are deleted (a change queued meanwhile cleared the token: the row stays); a failed turn clears its token, a dead
worker's claim lapses at its deadline. A token bucket caps the states per second, so a storm (every lock
reconnecting after a broker restart, a mass expiry) is spread out instead of sent at once.
"""
from __future__ import annotations

import logging
import secrets
import time
from datetime import timedelta

import sqlalchemy as sa

from .. import domain, statequeue
from ..extensions import db
from ..sqlsets import among
from ..models import Lock, StateChange
from ..timeutil import utcnow
from .envelope import Keyring, encode_state
from .metrics import Metrics

log = logging.getLogger("keydrop.bridge")
Q = StateChange
CLAIM_MARGIN = 20.0  # seconds a SQLite claim outlives the PUBACK wait (the deletion may wait for the write lock)


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
        # built once: a statement built at every idle poll costs more than the read (a few hundred µs here)
        self._peek = sa.select(Q.id).where(_claimable(sa.bindparam("now"))).order_by(Q.id).limit(1)
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
        """One indexed read of the queue's head (past the rows other workers claimed on SQLite, a batch each at
        most): the cost of an idle poll, whatever the fleet's size."""
        return db.session.execute(self._peek, {"now": utcnow()}).first() is not None

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
        token = None
        if sqlite:
            db.session.rollback()  # the claim starts its own write transaction (not one upgraded from the peek's read)
            token, claimed = self._mark(budget)
        else:
            claimed = self._claim(budget)
        infos = []
        try:
            msgs = []
            # the claimed locks and their codes in two queries, not two per lock
            ids = [lid for _row, lid in claimed]
            locks = db.session.scalars(sa.select(Lock).where(among(Lock.id, ids))).all() if ids else []
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
                db.session.rollback()  # end the read before the broker is waited for (see _mark)
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
            if token is not None:
                self._release(token)
            self.metrics.add("publish_unconfirmed")
            log.warning("%d desired states not confirmed by the broker, kept queued: %s", len(claimed), exc)
            return 0
        if token is not None:
            self._delete_marked(token, {lid: rev for lid, _t, _p, rev in msgs})
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

    def _mark(self, budget: int) -> tuple[str, list[tuple]]:
        """SQLite: claim the head rows no other worker claims, in one short committed write. Its write lock covers
        the whole database, so a DELETE held open while the broker is waited for (up to ack_timeout, seconds when
        a broker node dies) would stall every write of the web and the API past their busy timeout; rows only read
        here would be published by both workers, and deleting by the ids read would delete other locks' rows
        (SQLite gives a new row the id after the highest one left, so once the other worker deleted the rows read,
        the next locks queued take their ids)."""
        token = secrets.token_hex(8)
        now = utcnow()
        head = sa.select(Q.id).where(_claimable(now)).order_by(Q.id).limit(budget).scalar_subquery()
        rows = db.session.execute(
            sa.update(Q).where(Q.id.in_(head))
            .values(claimed_by=token, claimed_until=now + timedelta(seconds=self.ack_timeout + CLAIM_MARGIN))
            .returning(Q.id, Q.lock_id).execution_options(synchronize_session=False)).all()
        db.session.commit()
        return token, sorted(tuple(r) for r in rows)

    def _release(self, token: str) -> None:
        """SQLite: a turn that failed gives its rows back at once (else they wait for the claim's deadline)."""
        try:
            db.session.execute(sa.update(Q).where(Q.claimed_by == token).values(claimed_by=None, claimed_until=None)
                               .execution_options(synchronize_session=False))
            db.session.commit()
        except Exception as exc:
            db.session.rollback()
            log.warning("claimed desired states not released (queued again at the claim's deadline): %s", exc)

    def _delete_marked(self, token: str, published: dict) -> None:
        """Delete the rows still claimed by this turn, then queue again each lock whose desired revision moved past
        the one published: another worker may have published the newer state first, and this older one may have
        reached the broker last (retained); the current state is sent again."""
        db.session.execute(sa.delete(Q).where(Q.claimed_by == token).execution_options(synchronize_session=False))
        if published:
            now = db.session.execute(sa.select(Lock.id, Lock.desired_revision).where(among(Lock.id, published)))
            statequeue.enqueue(sorted(lid for lid, rev in now if rev != published[lid]))


def _claimable(now):
    """The rows a worker may claim: all on PostgreSQL (its row locks do the claiming); on SQLite those not claimed,
    or whose claim lapsed (its worker died)."""
    return sa.or_(Q.claimed_by.is_(None), Q.claimed_until < now)
