"""Cost of the bridge finding work, against the size of the fleet: 1,000, 10,000 and 100,000 registered locks (rows
only, no connections), on SQLite and, with KEYDROP_FLEET_DATABASE_URL (a PostgreSQL server; a private database is
created and dropped), on PostgreSQL.

- idle poll: one Publisher.publish_due() with nothing queued (an indexed read of the change queue's head);
- one change: the web queues one lock's change and commits, then publish_due() claims it, builds and publishes the
  state (to a stand-in client that acknowledges at once) and commits;
- PostgreSQL wake-up: commit of a change (NOTIFY) → the bridge's listener wakes;
- for comparison, a scan of every lock (the kind of query the bridge ran every 50 ms before the change queue);
- expire_due (run by the bridge every 30 s) with two codes per lock (one live, one long expired): nothing due, and
  one code due; and, for comparison, nothing due without its index (ix_code_expiry_due: a scan of every code).
Median of repeated runs; target: flat within 2× from 1,000 to 100,000.
"""
from __future__ import annotations

import json
import logging
import os
import queue
import random
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SIZES = [int(x) for x in os.environ.get("KEYDROP_POLL_SIZES", "1000,10000,100000").split(",")]


class _Acked:
    def wait_for_publish(self, timeout=None):
        pass

    def is_published(self):
        return True


class _Client:
    """Stands in for paho: the broker acknowledges every publication at once."""

    def publish(self, topic, payload, qos=0, retain=False):
        return _Acked()


def _median_us(fn, runs):
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out) * 1e6


def _fill(db, n):
    """n lock rows as register_lock makes them (one agency), in bulk, plus the bridge's state rows."""
    import sqlalchemy as sa
    from cloud import domain
    from cloud.models import BridgeLockState, Lock
    agency, owner = domain.create_agency(name="Poll", email=f"poll{uuid.uuid4().hex[:6]}@bench.example.com",
                                         password="poll bench pw")
    tmpl = Lock.new(mac="b0c000000000", agency=agency, name="Bench", address="1 Bench Road", timezone="UTC", by=owner)
    base = {c.key: getattr(tmpl, c.key) for c in Lock.__table__.columns if getattr(tmpl, c.key, None) is not None}
    base.update(agency_id=agency.id, registered_by_id=owner.id)
    if tmpl in db.session:
        db.session.expunge(tmpl)
    ids = [f"{0xB0C000000000 + i:012x}" for i in range(n)]
    for k in range(0, n, 5000):
        rows = [dict(base, id=lid, secret=secrets.token_bytes(32)) for lid in ids[k:k + 5000]]
        db.session.execute(sa.insert(Lock), rows)
        db.session.execute(sa.insert(BridgeLockState), [{"lock_id": lid, "last_counter": 0, "seen_window": 0,
                                                          "online": False} for lid in ids[k:k + 5000]])
    db.session.commit()
    return ids, agency.id


def _fill_codes(db, ids, agency_id):
    """Two codes per lock: one live for a month, one that ended a month ago and was noted as expired."""
    import sqlalchemy as sa
    from datetime import timedelta
    from cloud.models import Code
    from cloud.timeutil import utcnow
    now = utcnow()
    live = {"valid_from": now - timedelta(days=1), "valid_until": now + timedelta(days=30), "expired_noted_at": None}
    old = {"valid_from": now - timedelta(days=40), "valid_until": now - timedelta(days=30),
           "expired_noted_at": now - timedelta(days=30)}
    for k in range(0, len(ids), 5000):
        db.session.execute(sa.insert(Code), [dict(w, lock_id=lid, agency_id=agency_id, code="1234", revision=1,
                                                  created_at=now) for lid in ids[k:k + 5000] for w in (live, old)])
    db.session.commit()


def _expiry(db, ids, agency_id) -> dict:
    """Cost of expire_due with nothing due, with one code due, and with nothing due without the index."""
    import sqlalchemy as sa
    from datetime import timedelta
    from cloud import domain
    from cloud.models import Code
    from cloud.timeutil import utcnow

    def idle():
        assert domain.expire_due() == []
        db.session.rollback()

    _median_us(idle, 10)
    out = {"expire_idle_us": round(_median_us(idle, 50))}

    def one_due():
        now = utcnow()
        db.session.execute(sa.insert(Code), [{"lock_id": random.choice(ids), "agency_id": agency_id, "code": "4321",
                                              "revision": 1, "created_at": now, "valid_from": now - timedelta(hours=2),
                                              "valid_until": now - timedelta(seconds=1)}])
        db.session.commit()
        t = time.perf_counter()
        assert len(domain.expire_due()) == 1
        return time.perf_counter() - t
    out["expire_one_due_us"] = round(statistics.median(one_due() for _ in range(30)) * 1e6)
    db.session.execute(sa.text("DROP INDEX ix_code_expiry_due"))
    db.session.commit()
    out["expire_idle_unindexed_us"] = round(_median_us(idle, 20))
    return out


def measure(url: str, n: int) -> dict:
    import sqlalchemy as sa
    from cloud import create_app, statequeue
    from cloud.bridge import Bridge
    from cloud.extensions import db
    from cloud.models import Lock
    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "TESTING": True})
    with app.app_context():
        db.create_all()
        t0 = time.monotonic()
        ids, agency_id = _fill(db, n)
        _fill_codes(db, ids, agency_id)
        fill_s = time.monotonic() - t0
        b = Bridge(app, host="unused", port=0, username=None, password=None)
        b.client = _Client()
        b.session.connected.set()
        b.publisher.bucket.rate = 1e9  # measuring cost, not the rate limit
        assert b.publish_due() == 0
        _median_us(b.publish_due, 100)  # warm-up: connection, statement caches
        idle = _median_us(b.publish_due, 300)

        def one_change():
            statequeue.enqueue([random.choice(ids)])
            db.session.commit()
            t = time.perf_counter()
            assert b.publish_due() == 1
            return time.perf_counter() - t
        change = statistics.median(one_change() for _ in range(100)) * 1e6
        scan = _median_us(lambda: db.session.execute(sa.select(Lock.id).where(
            Lock.desired_revision > Lock.acked_revision)).all() and db.session.rollback(), 20)
        out = {"bench": "bridge_poll", "db": db.engine.dialect.name, "locks": n, "idle_poll_us": round(idle),
               "one_change_us": round(change), "full_scan_us": round(scan), "fill_s": round(fill_s, 1)}
        if db.engine.dialect.name == "postgresql":
            from cloud.bridge.wakeup import Listener
            q: queue.Queue = queue.Queue()
            listener = Listener(db.engine.url, lambda: q.put(1))
            listener.start()
            q.get(timeout=10)  # the listener's own first wake (connected)
            lat = []
            for _ in range(30):
                statequeue.enqueue([random.choice(ids)])
                t = time.perf_counter()
                db.session.commit()
                q.get(timeout=10)
                lat.append(time.perf_counter() - t)
                while not q.empty():
                    q.get_nowait()
            listener.stop()
            out["wakeup_us"] = round(statistics.median(lat) * 1e6)
            b.publish_due()
        out.update(_expiry(db, ids, agency_id))
        db.session.remove()
        db.engine.dispose()
    return out


def main() -> int:
    logging.disable(logging.WARNING)
    server = os.environ.get("KEYDROP_FLEET_DATABASE_URL")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        targets = [("sqlite", lambda n: f"sqlite:///{Path(tmp) / f'poll{n}.sqlite3'}", None)]
        if server:
            import sqlalchemy as sa
            admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")

            def pg(n):
                name = f"keydrop_poll_{os.getpid()}_{n}"
                with admin.connect() as c:
                    c.execute(sa.text(f'CREATE DATABASE "{name}"'))
                return sa.engine.make_url(server).set(database=name).render_as_string(hide_password=False)

            def drop(n):
                with admin.connect() as c:
                    c.execute(sa.text(f'DROP DATABASE IF EXISTS "keydrop_poll_{os.getpid()}_{n}" WITH (FORCE)'))
            targets.append(("postgresql", pg, drop))
        for kind, make, drop in targets:
            for n in SIZES:
                try:
                    r = measure(make(n), n)
                finally:
                    if drop:
                        drop(n)
                results.append(r)
                print(f"{kind} {n:>7} locks: idle poll {r['idle_poll_us']} µs, one change {r['one_change_us']} µs"
                      + (f", wake-up {r['wakeup_us']} µs" if "wakeup_us" in r else "")
                      + f"; a scan of every lock {r['full_scan_us']} µs; expire_due: nothing due "
                      f"{r['expire_idle_us']} µs, one due {r['expire_one_due_us']} µs, nothing due without the index "
                      f"{r['expire_idle_unindexed_us']} µs", flush=True)
                print(json.dumps(r), flush=True)
            rs = [r for r in results if r["db"] == kind]
            for key in ("idle_poll_us", "one_change_us", "expire_idle_us", "expire_one_due_us"):
                growth = rs[-1][key] / max(1, rs[0][key])
                spread = max(r[key] for r in rs) / max(1, min(r[key] for r in rs))
                print(f"{kind}: {key} at {SIZES[-1]:,} locks / at {SIZES[0]:,} = {growth:.2f}× "
                      f"({'flat within 2×' if growth <= 2 else 'NOT flat within 2×'}; spread of the runs "
                      f"{spread:.2f}×, load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
