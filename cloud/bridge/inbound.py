"""Uplinks in: one message or a batch, verified (uplink.py) and dispatched (dispatch.py); every outcome counted."""
from __future__ import annotations

import logging
import time

import sqlalchemy as sa

from ..extensions import db
from . import bulk
from .dispatch import HANDLERS, dispatch, savepoints
from .uplink import Drop, verify

log = logging.getLogger("keydrop.bridge")


def handle(bridge, topic: str, payload: bytes) -> bool:
    """Verify and act on one uplink message. Never raises; returns True if accepted."""
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
    return _dispatch_safely(bridge, up)


def handle_batch(bridge, messages: list[tuple[str, bytes]]) -> None:
    """handle() for a chunk, without committing (the main loop commits the chunk). Hellos and acks (most of a storm
    or a flood) go through the fast path (bulk.py: a few statements for the whole chunk), the rest through
    dispatch in arrival order. If the fast path fails, its messages go through dispatch one by one."""
    fast, rest = [], []
    bridge.keyring.load(t.split("/")[1] for t, _ in messages if t.count("/") == 2 and len(t) <= 64)
    for topic, payload in messages:
        try:
            up = verify(topic, payload, bridge.keyring, HANDLERS)
        except Drop as d:
            bridge.metrics.drop(d.reason, d.lock_id, d.level)
            continue
        except Exception:
            log.exception("verifying an uplink")
            db.session.rollback()
            bridge.metrics.drop("error", level=0)
            continue
        (fast if bulk.takes(bridge, up) else rest).append(up)
    if fast:
        try:
            bulk.apply(bridge, fast)
        except Exception:
            log.exception("applying %d hellos and acks together; applying them one by one", len(fast))
            rest = fast + rest
    for up in rest:
        _dispatch_safely(bridge, up)


RETRIES = 3          # attempts of an uplink whose database work failed for a reason that passes (a deadlock
RETRY_S = 0.05       # between two workers, a busy SQLite, two workers creating a new lock's counter row at once):
PASSING = (sa.exc.OperationalError, sa.exc.IntegrityError)  # the chunk so far is committed, then it runs again


def _dispatch_safely(bridge, up) -> bool:
    for attempt in range(1, RETRIES + 1):
        try:
            dispatch(bridge, up)
            return True
        except Drop as d:
            bridge.metrics.drop(d.reason, d.lock_id, d.level)
            return False
        except PASSING:
            _undo(up)
            if attempt == RETRIES:
                log.exception("handling %s from %s (%d attempts)", up.t, up.lock_id, RETRIES)
                break
            # what the chunk applied before it is kept (its locks released); this one is applied afresh, its
            # counter included (undone with it). A database that cannot even commit is not waited for here
            try:
                db.session.commit()
            except sa.exc.SQLAlchemyError:
                db.session.rollback()
                log.exception("handling %s from %s: the database is not answering", up.t, up.lock_id)
                break
            bridge.metrics.add("retried")
            time.sleep(RETRY_S * attempt)
        except Exception:
            log.exception("handling %s from %s", up.t, up.lock_id)
            _undo(up)
            break
    bridge.metrics.drop("error", up.lock_id, level=0)
    return False


def _undo(up) -> None:
    if not (HANDLERS[up.t].batched and savepoints()):  # else its savepoint was rolled back
        db.session.rollback()
