"""Uplinks in: one message or a batch, verified (uplink.py) and dispatched (dispatch.py); every outcome counted."""
from __future__ import annotations

import logging

from ..extensions import db
from .dispatch import HANDLERS, accept_counters, dispatch, is_plain_reack
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
    """handle() for a batch. On PostgreSQL the plain re-acks (most of a flood) have their counters accepted
    together (dispatch.accept_counters: two round trips for the batch instead of one per message); the
    rest, and everything on SQLite (no round trips), goes through handle() in order."""
    if not bridge.listen:
        for topic, payload in messages:
            bridge.handle(topic, payload)
        return
    plain = []
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
        if is_plain_reack(bridge, up):
            plain.append(up)
        else:
            _dispatch_safely(bridge, up)
    if plain:
        try:
            accepted = accept_counters([(up.lock_id, up.n) for up in plain])
        except Exception:
            log.exception("accepting %d counters", len(plain))
            db.session.rollback()
            for _ in plain:
                bridge.metrics.drop("error", level=0)
            return
        for up, ok in zip(plain, accepted):
            if ok:
                bridge.seen(up.lock_id)
                bridge.metrics.add("ok_ack")
            else:
                bridge.metrics.drop("replay", up.lock_id)


def _dispatch_safely(bridge, up) -> bool:
    try:
        dispatch(bridge, up)
        return True
    except Drop as d:
        bridge.metrics.drop(d.reason, d.lock_id, d.level)
    except Exception:
        log.exception("handling %s from %s", up.t, up.lock_id)
        db.session.rollback()
        bridge.metrics.drop("error", up.lock_id, level=0)
    return False
