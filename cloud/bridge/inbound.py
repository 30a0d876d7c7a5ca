"""Uplinks in: one message or a batch, verified (uplink.py) and dispatched (dispatch.py); every outcome counted.

A chunk (handle_batch) knows what became of each of its uplinks (`Chunk`): done (applied and committed, or
dropped for good: acknowledged), or held (the database did not take it: not acknowledged, applied again later,
loop.py). It follows the session's commits and rollbacks (SQLAlchemy session events), so an uplink counts as
applied only once a commit after its writes succeeded, wherever that commit was (dispatch commits before a
handler that commits itself, a domain operation commits its own work, the chunk commits at its end).
"""
from __future__ import annotations

import logging
import time
from typing import Optional

import sqlalchemy as sa

from ..extensions import db
from . import bulk
from .dispatch import HANDLERS, dispatch, savepoints
from .uplink import Drop, verify

log = logging.getLogger("keydrop.bridge")

RETRIES = 3          # attempts of an uplink whose database work failed for a reason that passes (a deadlock
RETRY_S = 0.05       # between two workers, a busy SQLite, two workers creating a new lock's counter row at once):
PASSING = (sa.exc.OperationalError, sa.exc.IntegrityError)  # the chunk so far is committed, then it runs again

APPLIED, DROPPED, HELD = "applied", "dropped", "held"  # what _dispatch_safely made of one uplink


def unavailable(exc: BaseException) -> bool:
    """The database itself failed (not this message): unreachable, a lost connection, a lock or a deadlock that
    outlasted the retries, no connection free in the pool. An IntegrityError is the database's answer about
    the data: not this."""
    if isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError)):
        return True
    return isinstance(exc, sa.exc.DBAPIError) and bool(exc.connection_invalidated)


class Unavailable(Exception):
    """The database is not answering: the chunk stops, what it did not commit is held."""

    def __init__(self, cause: BaseException):
        super().__init__(str(cause))
        self.cause = cause


def handle(bridge, topic: str, payload: bytes) -> bool:
    """Verify and act on one uplink message (tests, tools; the main loop takes chunks, handle_batch). Never raises;
    True if accepted. Nothing is held here: an uplink the database does not take is counted `error`."""
    try:
        up = verify(topic, payload, bridge.keyring, HANDLERS)
    except Drop as d:
        bridge.metrics.drop(d.reason, d.lock_id, d.level)
        return False
    except Exception:
        log.exception("verifying an uplink")
        db.session.rollback()
        bridge.metrics.drop("error", level=0)
        return False
    try:
        outcome = _dispatch_safely(bridge, up)
    except Unavailable as u:
        log.error("handling %s from %s: the database is not answering: %s", up.t, up.lock_id, u)
        outcome = HELD
    if outcome == HELD:
        bridge.metrics.drop("error", up.lock_id, level=0)
    return outcome == APPLIED


DONE, OPEN, HOLD = 1, 2, 3


class Chunk:
    """What became of each uplink of a chunk, by index: DONE (applied and committed, or dropped: to acknowledge),
    OPEN (applied in the open transaction), HOLD (the database did not take it), None (not tried: the database
    went away first; held too). `unavailable`: why the database stopped answering, if it did."""

    KEY = "keydrop_bridge_chunk"

    def __init__(self, bridge, n: int):
        self.bridge = bridge
        self.status: list[Optional[int]] = [None] * n
        self.open: list[int] = []
        self.unavailable: Optional[BaseException] = None
        self.committed = 0  # uplinks applied and committed
        self._replies = bridge.pending_replies()  # the replies before this index answer committed work

    def held(self) -> list[int]:
        return [i for i, s in enumerate(self.status) if s is None or s == HOLD]

    def done(self, i: int) -> None:
        self.status[i] = DONE

    def hold(self, i: int) -> None:
        self.status[i] = HOLD

    def applied(self, *indices: int) -> None:
        for i in indices:
            self.status[i] = OPEN
        self.open.extend(indices)
        if not db.session().in_transaction():  # its own domain operation committed it (and all before it)
            self.on_commit()

    # the session's events (registered below), while the chunk is attached to the session
    def on_commit(self) -> None:
        for i in self.open:
            self.status[i] = DONE
        self.committed += len(self.open)
        self.open.clear()
        self.bridge.metrics.settle()
        self._replies = self.bridge.pending_replies()

    def on_rollback(self) -> None:
        for i in self.open:
            self.status[i] = HOLD
        self.open.clear()
        self.bridge.metrics.discard()
        self.bridge.drop_replies(self._replies)
        self.bridge.acked.clear()  # a cache of recorded acks: what it learnt in the transaction may be gone

    def attach(self) -> None:
        db.session.info[self.KEY] = self
        self.bridge.metrics.begin()

    def finish(self) -> None:
        """The chunk's commit (or, the database gone, its rollback); then nothing is attached any more."""
        try:
            if self.unavailable is None:
                try:
                    db.session.commit()
                except Exception as exc:
                    self.unavailable = exc
                    _rollback()
            else:
                _rollback()
        finally:
            db.session.info.pop(self.KEY, None)
            self.bridge.metrics.end()


def _rollback() -> None:
    try:
        db.session.rollback()
    except Exception:
        log.debug("rolling back after the database went away", exc_info=True)


def _chunk_of(session) -> Optional[Chunk]:
    return session.info.get(Chunk.KEY)


@sa.event.listens_for(db.session, "after_commit")
def _after_commit(session) -> None:
    chunk = _chunk_of(session)
    if chunk is not None and not session.in_nested_transaction():  # not a savepoint's release
        chunk.on_commit()


@sa.event.listens_for(db.session, "after_soft_rollback")
def _after_rollback(session, previous_transaction) -> None:
    chunk = _chunk_of(session)
    if chunk is not None and previous_transaction.parent is None:  # the outer transaction (not a savepoint)
        chunk.on_rollback()


def handle_batch(bridge, messages: list[tuple[str, bytes]]) -> Chunk:
    """handle() for a chunk, committed at its end; returns the Chunk (what is done, what is held). Hellos and
    acks (most of a storm or a flood) go through the fast path (bulk.py: a few statements for the whole chunk),
    the rest through dispatch in arrival order. If the fast path fails, its messages go through dispatch one by
    one. If the database stops answering, the chunk stops there: what it did not commit is held."""
    chunk = Chunk(bridge, len(messages))
    chunk.attach()
    try:
        _handle_batch(bridge, messages, chunk)
    except Unavailable as u:
        chunk.unavailable = u.cause
    finally:
        chunk.finish()
    return chunk


def _handle_batch(bridge, messages: list[tuple[str, bytes]], chunk: Chunk) -> None:
    fast, rest = [], []
    try:
        bridge.keyring.load(t.split("/")[1] for t, _ in messages if t.count("/") == 2 and len(t) <= 64)
    except Exception as exc:
        db.session.rollback()
        if unavailable(exc):
            raise Unavailable(exc)
        log.exception("reading the chunk's lock secrets")  # each is read when verified
    for i, (topic, payload) in enumerate(messages):
        try:
            up = verify(topic, payload, bridge.keyring, HANDLERS)
        except Drop as d:
            bridge.metrics.drop(d.reason, d.lock_id, d.level)
            chunk.done(i)
            continue
        except Exception as exc:
            db.session.rollback()
            if unavailable(exc):  # its secret could not be read: this one and the rest are held
                raise Unavailable(exc)
            log.exception("verifying an uplink")
            bridge.metrics.drop("error", level=0)
            chunk.done(i)
            continue
        (fast if bulk.takes(bridge, up) else rest).append((i, up))
    if fast:
        try:
            accepted = bulk.apply(bridge, [up for _, up in fast])
        except Exception as exc:
            if unavailable(exc):
                log.debug("applying %d hellos and acks together: %s; applying them one by one", len(fast), exc)
            else:
                log.exception("applying %d hellos and acks together; applying them one by one", len(fast))
            rest = fast + rest
        else:
            for (i, _), ok in zip(fast, accepted):
                if not ok:
                    chunk.done(i)  # a replay, counted
            chunk.applied(*(i for (i, _), ok in zip(fast, accepted) if ok))
    for i, up in rest:
        outcome = _dispatch_safely(bridge, up)
        if outcome == APPLIED:
            chunk.applied(i)
        elif outcome == DROPPED:
            chunk.done(i)
        else:
            chunk.hold(i)


def _dispatch_safely(bridge, up) -> str:
    """APPLIED (in the open transaction or committed), DROPPED (counted), or HELD (its database work failed for a
    reason that passes, RETRIES times, while the database answers). Raises Unavailable when the database does
    not answer."""
    for attempt in range(1, RETRIES + 1):
        try:
            dispatch(bridge, up)
        except Drop as d:
            bridge.metrics.drop(d.reason, d.lock_id, d.level)
            return DROPPED
        except PASSING as exc:
            _undo(up)
            if attempt == RETRIES:
                if unavailable(exc):
                    raise Unavailable(exc)
                log.warning("handling %s from %s: %d attempts failed (%s); held, applied again later", up.t,
                            up.lock_id, RETRIES, exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc)
                return HELD
            # what the chunk applied before it is kept (its locks released); this one is applied afresh, its
            # counter included (undone with it). A database that cannot even commit is not waited for here
            try:
                db.session.commit()
            except Exception as exc2:
                _rollback()
                raise Unavailable(exc2)
            bridge.metrics.add("retried")
            time.sleep(RETRY_S * attempt)
            continue
        except Exception as exc:
            _undo(up)
            if unavailable(exc):
                raise Unavailable(exc)
            log.exception("handling %s from %s", up.t, up.lock_id)
            bridge.metrics.drop("error", up.lock_id, level=0)
            return DROPPED
        bridge.seen(up.lock_id)
        bridge.metrics.applied("ok_" + up.t)
        return APPLIED
    raise AssertionError("unreachable")


def _undo(up) -> None:
    if not (HANDLERS[up.t].batched and savepoints()):  # else its savepoint was rolled back
        _rollback()
