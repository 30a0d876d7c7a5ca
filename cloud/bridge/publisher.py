"""Desired-state publishing: finds the locks whose code set changed and publishes their `state` (retained, QoS 1)."""
from __future__ import annotations

import logging
import time

import sqlalchemy as sa

from .. import domain
from ..extensions import db
from ..models import BridgeLockState, Lock
from .envelope import Keyring, encode_state
from .metrics import Metrics

log = logging.getLogger("keydrop.bridge")
S = BridgeLockState


class Publisher:
    def __init__(self, session, keyring: Keyring, metrics: Metrics):
        self.session, self.keyring, self.metrics = session, keyring, metrics
        self.t_query = self.t_pushed = 0.0

    def push_state(self, lock: Lock, *, commit: bool = True) -> None:
        state = domain.desired_state(lock)
        topic = f"lock/{lock.id}/down"
        try:
            body = encode_state(state)
        except ValueError as exc:
            # more codes than a lock holds: not published (the lock keeps its last set); retried at the
            # lock's next change, not at every poll
            self.metrics.add("state_too_large")
            log.error("lock %s: desired state of revision %s not published: %s", lock.id, state["revision"], exc)
            db.session.execute(sa.update(S).where(S.lock_id == lock.id).values(published_revision=state["revision"]))
            if commit:
                db.session.commit()
            return
        env = self.keyring.get(lock.id)
        self.session.publish(topic, env.seal(topic, body), retain=True)
        r = db.session.execute(sa.update(S).where(S.lock_id == lock.id).values(published_revision=body["rev"]))
        if r.rowcount == 0:
            db.session.add(S(lock_id=lock.id, last_counter=0, published_revision=body["rev"], online=False))
        if commit:
            db.session.commit()
        self.metrics.add("states_published")

    def publish_due(self) -> int:
        rows = db.session.execute(
            sa.select(Lock.id).join(S, S.lock_id == Lock.id, isouter=True).where(
                Lock.desired_revision > sa.func.coalesce(S.published_revision, 0))).scalars().all()
        self.t_query = time.monotonic()
        for lid in rows:
            try:
                self.push_state(db.session.get(Lock, lid), commit=False)
            except Exception:
                log.exception("publishing the desired state of %s", lid)
                db.session.rollback()
                self.metrics.add("publish_error")
        self.t_pushed = time.monotonic()
        if rows:
            db.session.commit()  # one commit for the published revisions of the whole poll
        return len(rows)

    def republish_all(self) -> None:
        """After (re)connecting: the broker may have restarted without persistence and lost the retained
        states, so publish every lock's desired state again on the next poll."""
        db.session.execute(sa.update(S).values(published_revision=0))
        db.session.commit()
