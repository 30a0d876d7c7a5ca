"""What the bridge's database side costs per uplink, in-process (no broker: the verified and applied part only,
tools/bench/bridge_mqtt.py measures the MQTT side): KEYDROP_UPLINKS_N locks (default 1,000), each sending, in
chunks of 1,000 through inbound.handle_batch as the main loop does:

- its first hello (the lock's bridge row made), then a hello again (a reconnect storm);
- its first ack of the state it was sent (recorded: acked revision, codes on the lock);
- 10 re-acks of that state (a flood: only the counter accepted);
- then one flush of the last-contact times of every lock heard (flush_seen, once a second in the bridge).

SQLite (a file) and, with KEYDROP_FLEET_DATABASE_URL (a PostgreSQL server; a private database is made and
dropped), PostgreSQL. Figures: wall and CPU µs per uplink per phase. Every uplink must be applied: one that is
not (counted by the bridge as anything but ok_*) fails the run.
Prints one JSON line per database: {"bench":"bridge_uplinks","db":…,"locks":…,"<phase>_us":…,"<phase>_cpu_us":…}.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CHUNK = 1000


def measure(url: str, n: int, tmp: Path) -> dict:
    from cloud.bridge import Bridge, Envelope, inbound
    from cloud.extensions import db
    from tools.bench.bridge_poll import _Client
    from tools.fleetsim import Cloud
    cloud = Cloud(tmp)
    cloud.db_url = url
    creds = cloud.setup(n)
    out: dict = {"bench": "bridge_uplinks", "locks": n}
    with cloud.app.app_context():
        out["db"] = db.engine.dialect.name
        b = Bridge(cloud.app, host="unused", port=0, username=None, password=None)
        b.client = _Client()
        b.session.connected.set()
        b.publisher.bucket.rate = 1e9  # cost, not the rate limit
        envs = [(lid, Envelope(secret)) for lid, secret, _ in creds]
        counter = {lid: 0 for lid, _, _ in creds}

        def uplinks(kind: str, times: int = 1) -> list[tuple[str, bytes]]:
            msgs = []
            for _ in range(times):
                for lid, env in envs:
                    counter[lid] += 1
                    obj = ({"v": 1, "t": "hello", "will": 0, "fw": "bench", "boot": 1, "time": None, "rev": 0,
                            "nonce": "ab" * 8} if kind == "hello" else {"v": 1, "t": "ack", "rev": 1})
                    obj["n"] = counter[lid]
                    msgs.append((f"lock/{lid}/up", env.seal(f"lock/{lid}/up", obj)))
            return msgs

        failed = 0

        def phase(name: str, msgs: list, ok: str) -> None:
            nonlocal failed
            before = b.counts[ok]
            t0, c0 = time.perf_counter(), time.process_time()
            for i in range(0, len(msgs), CHUNK):
                inbound.handle_batch(b, msgs[i:i + CHUNK])
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            applied = b.counts[ok] - before
            out[f"{name}_us"] = round(wall / len(msgs) * 1e6, 1)
            out[f"{name}_cpu_us"] = round(cpu / len(msgs) * 1e6, 1)
            if applied != len(msgs):
                out[f"{name}_not_applied"] = len(msgs) - applied
                failed += 1

        phase("first_hellos", uplinks("hello"), "ok_hello")
        b.publish_due()
        phase("hellos_again", uplinks("hello"), "ok_hello")
        b.publish_due()
        phase("first_acks", uplinks("ack"), "ok_ack")
        phase("reacks", uplinks("ack", 10), "ok_ack")
        t0 = time.perf_counter()
        written = b.flush_seen()
        out["flush_seen_ms"] = round((time.perf_counter() - t0) * 1e3, 1)
        out["flush_seen_locks"] = written
        out["failed"] = failed
        db.session.remove()
        db.engine.dispose()
    return out


def main() -> int:
    logging.disable(logging.WARNING)
    n = int(os.environ.get("KEYDROP_UPLINKS_N", "1000"))
    server = os.environ.get("KEYDROP_FLEET_DATABASE_URL")
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        targets = [f"sqlite:///{Path(tmp) / 'uplinks.sqlite3'}"]
        admin = name = None
        if server:
            import sqlalchemy as sa
            admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
            name = f"keydrop_uplinks_{os.getpid()}_{uuid.uuid4().hex[:6]}"
            with admin.connect() as c:
                c.execute(sa.text(f'CREATE DATABASE "{name}"'))
            targets.append(sa.engine.make_url(server).set(database=name).render_as_string(hide_password=False))
        try:
            for url in targets:
                r = measure(url, n, Path(tmp))
                print(f"  {r['db']}, {n} locks, µs per uplink wall / CPU: first hellos {r['first_hellos_us']:.0f} / "
                      f"{r['first_hellos_cpu_us']:.0f}, hellos again {r['hellos_again_us']:.0f} / "
                      f"{r['hellos_again_cpu_us']:.0f}, first acks {r['first_acks_us']:.0f} / "
                      f"{r['first_acks_cpu_us']:.0f}, re-acks {r['reacks_us']:.0f} / {r['reacks_cpu_us']:.0f}; "
                      f"last contact of {r['flush_seen_locks']} locks written in {r['flush_seen_ms']:.0f} ms",
                      flush=True)
                print(json.dumps(r), flush=True)
                if r["failed"]:
                    print(f"bridge_uplinks: FAILED: uplinks not applied: "
                          f"{ {k: v for k, v in r.items() if k.endswith('_not_applied')} }")
                    failed = 1
        finally:
            if admin is not None:
                import sqlalchemy as sa
                with admin.connect() as c:
                    c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                admin.dispose()
    return failed


if __name__ == "__main__":
    sys.exit(main())
