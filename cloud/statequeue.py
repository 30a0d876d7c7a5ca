"""The change queue between the domain and the bridge: an indexed outbox of locks whose desired state changed.

The domain calls enqueue() in the transaction that changes a lock's desired state (Lock.bump_revision,
expire_due), so a change is queued exactly when it commits. A lock has at most one pending row: a second change
before the bridge published the first finds the row already there (the bridge always publishes the lock's
current state, so one row covers both; on SQLite a worker's claim on the row is cleared, see _insert). On PostgreSQL
the same transaction sends
NOTIFY keydrop_state_change, which wakes the bridge at commit; on SQLite the bridge polls the queue (one indexed
`LIMIT 1` read).
The bridge side (claim, publish, delete) is cloud/bridge/publisher.py. See docs/protocol.md, "The change queue".
"""
from __future__ import annotations

from typing import Iterable

import sqlalchemy as sa

from .extensions import db
from .models import StateChange
from .timeutil import utcnow

CHANNEL = "keydrop_state_change"


def _insert(dialect: str):
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
        return insert(StateChange).on_conflict_do_nothing(index_elements=["lock_id"])
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
        # A lock already queued keeps its one row and its place, and loses a worker's claim on it: the worker
        # publishing the row (it read the state before this change) deletes only rows it still claims when the
        # broker has confirmed (cloud/bridge/publisher.py), so the change stays queued and is published next.
        return insert(StateChange).on_conflict_do_update(index_elements=["lock_id"],
                                                         set_={"claimed_by": None, "claimed_until": None})
    raise RuntimeError(f"the change queue supports PostgreSQL and SQLite, not {dialect}")


def enqueue(lock_ids: Iterable[str]) -> None:
    """Queue the locks' desired states for publishing; commits with the caller's transaction."""
    now = utcnow()
    rows = [{"lock_id": lid, "queued_at": now} for lid in lock_ids]
    if not rows:
        return
    dialect = db.session.get_bind().dialect.name
    db.session.execute(_insert(dialect), rows)
    if dialect == "postgresql":
        db.session.execute(sa.text(f"NOTIFY {CHANNEL}"))  # delivered at commit, folded into one per transaction


def pending() -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(StateChange)) or 0
