"""Uplink → domain: one handler per message type, in a table (a new uplink type is one more entry here).

Each handler gets the bridge (its metrics, `reply`, `publisher`) and a verified Uplink whose counter the
dispatcher has already advanced in the open transaction; it validates its own fields (raise Drop("malformed")),
calls the domain (which commits) and returns nothing. See docs/protocol.md, "Adding an uplink message".
"""
from __future__ import annotations

import logging
import time
from typing import Callable

import sqlalchemy as sa

from .. import domain
from ..extensions import db
from ..firmware import rollout as fw_rollout
from ..models import BridgeLockState, Lock
from ..timeutil import utcnow
from .envelope import V, is_int
from .uplink import Drop, Uplink

log = logging.getLogger("keydrop.bridge")

S = BridgeLockState
_T = BridgeLockState.__table__
_COUNTER_UPDATE = _T.update().where(_T.c.lock_id == sa.bindparam("lid"), _T.c.last_counter < sa.bindparam("n")) \
    .values(last_counter=sa.bindparam("n"))

Handler = Callable[["object", Uplink], None]
# message type → (handler, whether the message's counter `n` must grow first)
HANDLERS: dict[str, tuple[Handler, bool]] = {}


def uplink(t: str, *, counted: bool = True):
    """Register the handler of uplink type `t`. counted=False: the handler checks `n` itself (the will)."""
    def register(fn: Handler) -> Handler:
        HANDLERS[t] = (fn, counted)
        return fn
    return register


def advance_counter(lock_id: str, n: int) -> None:
    """The counter must grow: one conditional UPDATE (Core, no ORM bookkeeping), atomic across workers."""
    r = db.session.execute(_COUNTER_UPDATE, {"lid": lock_id, "n": n})
    if r.rowcount == 1:
        return
    if db.session.scalar(sa.select(S.lock_id).where(S.lock_id == lock_id)) is None:
        db.session.add(S(lock_id=lock_id, last_counter=n, published_revision=0, online=False))
        db.session.flush()
        return
    raise Drop("replay", lock_id)


def dispatch(bridge, up: Uplink) -> None:
    """Run the handler of a verified uplink. Raises Drop (after a rollback) when it is refused."""
    handler, counted = HANDLERS[up.t]
    try:
        if counted:
            advance_counter(up.lock_id, up.n)
        handler(bridge, up)
    except Drop:
        db.session.rollback()
        raise
    bridge.metrics.add("ok_" + up.t)


def _lock(lock_id: str) -> Lock:
    return db.session.get(Lock, lock_id)


@uplink("will", counted=False)
def on_will(bridge, up: Uplink) -> None:
    # accepted once, only for the session announced by the last hello (docs/protocol.md)
    r = db.session.execute(sa.update(S).where(S.lock_id == up.lock_id, S.will_counter == up.n)
                           .values(will_counter=None, online=False, online_changed_at=utcnow()))
    if r.rowcount != 1:
        raise Drop("stale_will", up.lock_id, level=logging.INFO)
    db.session.commit()
    log.info("lock %s is offline (last will)", up.lock_id)


@uplink("ack")
def on_ack(bridge, up: Uplink) -> None:
    rev = up.msg.get("rev")
    if not is_int(rev):
        raise Drop("malformed", up.lock_id)
    # a re-ack of what the cloud already recorded (e.g. the retained state after a reconnect) needs no domain
    # write; acked revisions only grow, so a stale cache only costs a domain call
    if rev > bridge.acked.get(up.lock_id, -1):
        lock = _lock(up.lock_id)
        domain.codeset_acknowledged(lock, rev)
        bridge.acked[up.lock_id] = lock.acked_revision


@uplink("hello")
def on_hello(bridge, up: Uplink) -> None:
    m = up.msg
    fw, boot, ltime, rev, nonce, will = (m.get("fw"), m.get("boot"), m.get("time"), m.get("rev"), m.get("nonce"),
                                         m.get("will"))
    if not (isinstance(fw, str) and is_int(boot) and (ltime is None or is_int(ltime)) and is_int(rev)
            and isinstance(nonce, str) and len(nonce) <= 64 and (will is None or is_int(will))):
        raise Drop("malformed", up.lock_id)
    db.session.execute(sa.update(S).where(S.lock_id == up.lock_id).values(
        will_counter=will, online=True, online_changed_at=utcnow()))
    lock = _lock(up.lock_id)
    res = domain.lock_hello(lock, firmware=fw, boot_count=boot, lock_time=ltime, revision=rev)
    bridge.reply(up.lock_id, {"v": V, "t": "time", "now": int(time.time()), "nonce": nonce})
    announce = fw_rollout.on_hello(up.lock_id, fw)  # a lock that should move to another release hears it now
    if announce is not None:
        bridge.reply(up.lock_id, announce)
    if res.get("push"):
        bridge.publisher.push_state(lock)  # also re-creates a retained message lost by a broker restart


@uplink("log")
def on_log(bridge, up: Uplink) -> None:
    events = up.msg.get("ev")
    if not isinstance(events, list) or not events or len(events) > 64 or not all(
            isinstance(e, dict) and is_int(e.get("seq")) and e["seq"] > 0 for e in events):
        raise Drop("malformed", up.lock_id)
    norm = []
    for e in events:
        ev = dict(e)
        ts = ev.pop("ts", ev.get("t"))
        ev["t"] = ts if is_int(ts) else None
        ev["kind"] = str(ev.get("kind", "unknown"))[:32]
        if not is_int(ev.get("code_id")):
            ev.pop("code_id", None)
        norm.append(ev)
    bridge.metrics.add("events_new", domain.record_events(_lock(up.lock_id), norm))
    bridge.reply(up.lock_id, {"v": V, "t": "logack", "seq": max(e["seq"] for e in norm)})


@uplink("rotate")
def on_rotate(bridge, up: Uplink) -> None:
    fu = up.msg.get("first_used")
    if fu is not None and not is_int(fu):
        raise Drop("malformed", up.lock_id)
    lock = _lock(up.lock_id)
    domain.rotate_backup(lock, first_used_at=fu)
    bridge.publisher.push_state(lock)
