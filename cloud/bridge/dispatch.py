"""Uplink → domain: one handler per message type, in a table (a new uplink type is one more entry here).

A handler is registered with `@uplink(type, check=…)`. `check` looks at the verified message's fields only (no
database): False drops it as `malformed` before anything is written. Then the dispatcher accepts the message's
counter (replay protection, in the open transaction) and calls the handler with the bridge (its metrics,
`reply`, `wake`) and the Uplink; the handler calls the domain, which commits. See docs/protocol.md,
"Adding an uplink message".
"""
from __future__ import annotations

import logging
import time
from typing import Callable, NamedTuple

import sqlalchemy as sa

from .. import domain, statequeue
from ..extensions import db
from ..sqlsets import among
from ..firmware import rollout as fw_rollout
from ..models import BridgeLockState, Lock
from ..timeutil import utcnow
from .envelope import V, is_int
from .uplink import Drop, Uplink

log = logging.getLogger("keydrop.bridge")

S = BridgeLockState
WINDOW = 63  # counters below the highest one still accepted once (bits of seen_window)


class Entry(NamedTuple):
    handler: Callable
    check: Callable[[dict], bool]
    counted: bool  # the counter `n` must be new (False: the handler checks `n` itself, like the will)
    batched: bool  # needs no commit of its own (applied in the batch's transaction)


HANDLERS: dict[str, Entry] = {}


def uplink(t: str, *, check: Callable[[dict], bool] = lambda m: True, counted: bool = True, batched: bool = False):
    """Register the handler of uplink type `t`."""
    def register(fn):
        HANDLERS[t] = Entry(fn, check, counted, batched)
        return fn
    return register


def _accept_counter():
    """One conditional UPDATE, atomic across workers: `n` above the highest counter moves the window up; `n` in
    the window below it is accepted if its bit is not set yet. Everything else matches no row (a replay)."""
    c = S.__table__.c
    n = sa.bindparam("n", type_=sa.BigInteger)
    d = n - c.last_counter                       # > 0: a new highest counter
    one = sa.literal(1, sa.BigInteger)
    mask = sa.literal((1 << WINDOW) - 1, sa.BigInteger)

    def shift(x):  # 1 << x for 0 <= x < WINDOW (clamped so no branch shifts by more)
        return one.op("<<")(sa.cast(sa.case((x > WINDOW - 1, WINDOW - 1), (x < 0, 0), else_=x), sa.Integer))

    up_window = sa.case((d > WINDOW, 0),
                        else_=(c.seen_window.op("<<")(sa.cast(sa.case((d > WINDOW, WINDOW), else_=d), sa.Integer))
                               .op("|")(shift(d - 1))).op("&")(mask))
    below = c.last_counter - n - 1               # bit index of an older counter
    return (S.__table__.update()
            .where(c.lock_id == sa.bindparam("lid"),
                   sa.or_(d > 0, sa.and_(d < 0, below < WINDOW, c.seen_window.op("&")(shift(below)) == 0)))
            .values(last_counter=sa.case((d > 0, n), else_=c.last_counter),
                    seen_window=sa.case((d > 0, up_window), else_=c.seen_window.op("|")(shift(below)))))


_ACCEPT = _accept_counter()


def accept_counter(lock_id: str, n: int) -> None:
    if db.session.execute(_ACCEPT, {"lid": lock_id, "n": n}).rowcount == 1:
        return
    if db.session.scalar(sa.select(S.lock_id).where(S.lock_id == lock_id)) is None:
        db.session.add(S(lock_id=lock_id, last_counter=n, seen_window=0, online=False))
        db.session.flush()
        return
    raise Drop("replay", lock_id)



def window_accept(last: int, window: int, n: int) -> tuple[bool, int, int]:
    """The same rule as _ACCEPT, in Python: (accepted, new last_counter, new seen_window)."""
    if n > last:
        d = n - last
        return True, n, 0 if d > WINDOW else ((window << d) | (1 << (d - 1))) & ((1 << WINDOW) - 1)
    k = last - n - 1
    if n == last or k >= WINDOW or (window >> k) & 1:
        return False, last, window
    return True, last, window | (1 << k)


_T = S.__table__
_WRITE_WINDOW = _T.update().where(_T.c.lock_id == sa.bindparam("lid")).values(
    last_counter=sa.bindparam("last"), seen_window=sa.bindparam("win"))


_WRITE_WINDOWS_PG = sa.text(
    "UPDATE bridge_lock_state SET last_counter = w.last, seen_window = w.win "
    "FROM unnest(CAST(:lids AS varchar[]), CAST(:lasts AS bigint[]), CAST(:wins AS bigint[])) AS w(lid, last, win) "
    "WHERE bridge_lock_state.lock_id = w.lid")


def _write_windows(rows: dict[str, list[int]]) -> None:
    """Write the locks' new counter windows: on PostgreSQL one UPDATE from three arrays for the whole batch (an
    executemany is one statement per row on the server), elsewhere an executemany."""
    if db.session.get_bind().dialect.name != "postgresql":
        db.session.execute(_WRITE_WINDOW, [{"lid": k, "last": v[0], "win": v[1]} for k, v in rows.items()])
        return
    db.session.execute(_WRITE_WINDOWS_PG, {"lids": list(rows), "lasts": [v[0] for v in rows.values()],
                                           "wins": [v[1] for v in rows.values()]})


def accept_counters(pairs: list[tuple[str, int]]) -> list[bool]:
    """accept_counter for a whole batch in two round trips (PostgreSQL): the locks' rows are read FOR UPDATE (in
    id order, so two workers cannot deadlock), the window applied here, the rows written back in one executemany.
    A lock without a row yet goes through accept_counter."""
    ids = sorted({lid for lid, _ in pairs})
    rows = {lid: [last, win] for lid, last, win in db.session.execute(
        sa.select(S.lock_id, S.last_counter, S.seen_window).where(among(S.lock_id, ids)).order_by(S.lock_id)
        .with_for_update())}
    out = []
    for lid, n in pairs:
        row = rows.get(lid)
        if row is None:
            try:
                accept_counter(lid, n)
                out.append(True)
            except Drop:
                out.append(False)
            continue
        ok, row[0], row[1] = window_accept(row[0], row[1], n)
        out.append(ok)
    if rows:
        _write_windows(rows)
    return out


def is_plain_reack(bridge, up: Uplink) -> bool:
    """An ack of a revision the cloud already recorded: only its counter needs accepting (the flood case)."""
    return up.t == "ack" and is_int(up.msg.get("rev")) and up.msg["rev"] <= bridge.acked.get(up.lock_id, -1)


def savepoints() -> bool:
    """Whether a failed uplink can be undone alone by a savepoint. Not on SQLite: its Python driver starts a
    transaction only before a write, so a SAVEPOINT first would start one itself and its RELEASE commit it."""
    return db.session.get_bind().dialect.name == "postgresql"


def dispatch(bridge, up: Uplink) -> None:
    """Run the handler of a verified uplink. Raises Drop when it is refused; never leaves the batch's work
    rolled back: a batched handler runs in a savepoint (its failure undoes only its own writes), the others (and
    everything on SQLite) after a commit of the batch so far (the caller's rollback undoes only this one)."""
    entry = HANDLERS[up.t]
    if not entry.check(up.msg):
        raise Drop("malformed", up.lock_id)
    if not entry.batched or not savepoints():
        db.session.commit()  # a domain operation may roll back its own transaction: keep the batch's work safe
        _apply(bridge, up, entry)
        return
    replies = bridge.pending_replies()
    try:
        with db.session.begin_nested():
            _apply(bridge, up, entry)
    except BaseException:
        bridge.drop_replies(replies)  # what it meant to answer was undone with it
        raise


def _apply(bridge, up: Uplink, entry: Entry) -> None:
    if entry.counted:
        accept_counter(up.lock_id, up.n)
    entry.handler(bridge, up)  # the caller counts it, once it is applied for good (inbound._dispatch_safely)


def _lock(lock_id: str) -> Lock:
    return db.session.get(Lock, lock_id)


@uplink("will", counted=False, batched=True)
def on_will(bridge, up: Uplink) -> None:
    # accepted once, only for the session announced by the last hello (docs/protocol.md)
    r = db.session.execute(sa.update(S).where(S.lock_id == up.lock_id, S.will_counter == up.n)
                           .values(will_counter=None, online=False, online_changed_at=utcnow()))
    if r.rowcount != 1:
        raise Drop("stale_will", up.lock_id, level=logging.INFO)
    log.info("lock %s is offline (last will)", up.lock_id)


@uplink("ack", check=lambda m: is_int(m.get("rev")), batched=True)
def on_ack(bridge, up: Uplink) -> None:
    rev = up.msg["rev"]
    # a re-ack of what the cloud already recorded (e.g. the retained state after a reconnect) needs no domain
    # write; acked revisions only grow, so a stale cache only costs a domain call
    if rev > bridge.acked.get(up.lock_id, -1):
        lock = _lock(up.lock_id)
        domain.codeset_acknowledged(lock, rev, commit=False)
        bridge.acked[up.lock_id] = lock.acked_revision


def _hello_ok(m: dict) -> bool:
    fw, boot, ltime, rev, nonce, will = (m.get("fw"), m.get("boot"), m.get("time"), m.get("rev"), m.get("nonce"),
                                         m.get("will"))
    return (isinstance(fw, str) and is_int(boot) and (ltime is None or is_int(ltime)) and is_int(rev)
            and isinstance(nonce, str) and len(nonce) <= 64 and (will is None or is_int(will)))


@uplink("hello", check=_hello_ok, batched=True)
def on_hello(bridge, up: Uplink) -> None:
    # in the batch's transaction (a hello storm costs a commit per chunk, not per hello); the `time` reply goes
    # out after that commit (Bridge.reply)
    m = up.msg
    db.session.execute(sa.update(S).where(S.lock_id == up.lock_id).values(
        will_counter=m.get("will"), online=True, online_changed_at=utcnow()))
    lock = _lock(up.lock_id)
    behind = m["rev"] != lock.desired_revision
    if behind:
        # the lock is behind (or the broker lost the retained state): through the queue, so a reconnect storm is
        # published at the publisher's pace
        statequeue.enqueue([up.lock_id])
    domain.lock_hello(lock, firmware=m["fw"], boot_count=m["boot"], lock_time=m.get("time"), revision=m["rev"],
                      health=m.get("health"), commit=False)
    bridge.reply(up.lock_id, {"v": V, "t": "time", "now": int(time.time()), "nonce": m["nonce"]})
    announce = fw_rollout.on_hello(up.lock_id, m["fw"])  # a lock that should move to another release hears it now
    if announce is not None:
        bridge.reply(up.lock_id, announce)
    if behind:
        bridge.wake()


def _log_ok(m: dict) -> bool:
    events = m.get("ev")
    return isinstance(events, list) and 0 < len(events) <= 64 and all(
        isinstance(e, dict) and is_int(e.get("seq")) and e["seq"] > 0 for e in events)


@uplink("log", check=_log_ok)
def on_log(bridge, up: Uplink) -> None:
    norm = []
    for e in up.msg["ev"]:
        ev = dict(e)
        ts = ev.pop("ts", ev.get("t"))
        ev["t"] = ts if is_int(ts) else None
        ev["kind"] = str(ev.get("kind", "unknown"))[:32]
        if not is_int(ev.get("code_id")):
            ev.pop("code_id", None)
        norm.append(ev)
    bridge.metrics.applied("events_new", domain.record_events(_lock(up.lock_id), norm))
    bridge.reply(up.lock_id, {"v": V, "t": "logack", "seq": max(e["seq"] for e in norm)})


@uplink("rotate", check=lambda m: m.get("first_used") is None or is_int(m.get("first_used")))
def on_rotate(bridge, up: Uplink) -> None:
    domain.rotate_backup(_lock(up.lock_id), first_used_at=up.msg.get("first_used"))  # queues the new state
    bridge.wake()
