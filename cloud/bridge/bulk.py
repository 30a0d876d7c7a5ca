"""The fast path of a chunk of uplinks: hellos and acks applied in a few statements for the whole chunk.

A storm (10,000 locks reconnecting, each with a hello and then an ack of the state it is sent) is mostly these
two types; through dispatch.py each costs about ten round trips to the database, here the chunk costs about ten.
The chunk runs in one savepoint (SQLite: first in its transaction, see dispatch.savepoints): if anything in it
raises, that is rolled back, its replies are forgotten and the caller applies the same messages one by one
through dispatch (each isolated), so one bad message never costs the others. Counters and caches move only
once it succeeded.
"""
from __future__ import annotations

import logging
import time

import sqlalchemy as sa

from .. import domain, statequeue
from ..extensions import db
from ..firmware import rollout as fw_rollout
from ..sqlsets import among
from ..models import BridgeLockState, Lock, LockFirmware
from ..timeutil import utcnow
from .dispatch import HANDLERS, accept_counters, is_plain_reack, savepoints
from .envelope import V
from .uplink import Uplink

log = logging.getLogger("keydrop.bridge")

S = BridgeLockState
_T = S.__table__
_ONLINE = _T.update().where(_T.c.lock_id == sa.bindparam("lid")).values(
    will_counter=sa.bindparam("will"), online=True, online_changed_at=sa.bindparam("at"))


def takes(bridge, up: Uplink) -> bool:
    """True for the messages this path applies: well-formed hellos and acks."""
    return up.t in ("hello", "ack") and HANDLERS[up.t].check(up.msg)


def apply(bridge, ups: list[Uplink]) -> list[bool]:
    """Apply the chunk's hellos and acks (in that order: a lock's ack follows its hello); returns which were
    accepted (the others were replays). Raises on failure, with nothing of the chunk applied (the caller falls
    back to dispatch)."""
    mark = bridge.pending_replies()
    try:
        if savepoints():
            with db.session.begin_nested():
                outcome = _apply(bridge, ups)
        else:  # SQLite (see dispatch.savepoints): the fast path runs first in the chunk, nothing before it to keep
            try:
                outcome = _apply(bridge, ups)
            except BaseException:
                db.session.rollback()
                raise
    except BaseException:
        bridge.drop_replies(mark)
        raise
    accepted, acked = outcome
    bridge.seen(*(up.lock_id for up, ok in zip(ups, accepted) if ok))
    for up, ok in zip(ups, accepted):
        if ok:
            bridge.metrics.applied("ok_" + up.t)
        else:
            bridge.metrics.drop("replay", up.lock_id)
    bridge.acked.update(acked)
    return accepted


def _apply(bridge, ups: list[Uplink]) -> tuple[list[bool], dict[str, int]]:
    accepted = accept_counters([(up.lock_id, up.n) for up in ups])
    live = [up for up, ok in zip(ups, accepted) if ok]
    hellos = [up for up in live if up.t == "hello"]
    acks = [up for up in live if up.t == "ack" and not is_plain_reack(bridge, up)]
    if hellos:
        _hellos(bridge, hellos)
    acked: dict[str, int] = {}
    if acks:
        revs: dict[str, int] = {}
        for up in acks:
            revs[up.lock_id] = max(revs.get(up.lock_id, 0), up.msg["rev"])
        acked = domain.codesets_acknowledged(revs, commit=False)
    return accepted, acked


def _hellos(bridge, hellos: list[Uplink]) -> None:
    now = utcnow()
    # copies of one lock's hello in the chunk (a lock repeats an unanswered hello): the last one is applied and
    # answered, the others only had their counters accepted
    hellos = list({up.lock_id: up for up in hellos}.values())
    ids = sorted({up.lock_id for up in hellos})
    # the chunk's locks and firmware rows in two queries, held here (the session keeps only weak references):
    # lock_hello and rollout.on_hello then find them in the session instead of a round trip each
    locks = {lk.id: lk for lk in db.session.scalars(sa.select(Lock).where(among(Lock.id, ids)).order_by(Lock.id)
                                                   .execution_options(populate_existing=True))}
    firmware = {lf.lock_id: lf for lf in db.session.scalars(sa.select(LockFirmware)
                                                             .where(among(LockFirmware.lock_id, ids)))}
    db.session.execute(_ONLINE, [{"lid": up.lock_id, "will": up.msg.get("will"), "at": now} for up in hellos])
    behind = sorted({up.lock_id for up in hellos if up.msg["rev"] != locks[up.lock_id].desired_revision})
    # through the queue, so a reconnect storm is published at the publisher's pace
    statequeue.enqueue(behind)
    for up in hellos:
        m = up.msg
        domain.lock_hello(locks[up.lock_id], firmware=m["fw"], boot_count=m["boot"], lock_time=m.get("time"),
                          revision=m["rev"], health=m.get("health"), now=now, commit=False)
        bridge.reply(up.lock_id, {"v": V, "t": "time", "now": int(time.time()), "nonce": m["nonce"]})
        # a lock without a firmware row has nothing to hear (on_hello would look for it again)
        announce = fw_rollout.on_hello(up.lock_id, m["fw"]) if up.lock_id in firmware else None
        if announce is not None:
            bridge.reply(up.lock_id, announce)
    if behind:
        bridge.wake()
