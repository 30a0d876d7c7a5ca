"""Broker logins at fleet size: how soon a newly registered lock can log in to mosquitto (dynamic security).

For each size N (KEYDROP_LOGINS_N, default "10000,100000"): a database with N locks and a mosquitto whose
dynamic-security state holds their N logins; then 5 more locks are registered through domain.register_lock
(which gives the broker the login before it returns) and each logs in with a raw MQTT CONNECT right after.
Prints, per N: register → CONNACK accepted (p50 / max, target ≤ 2 s), the time the plugin took for the command
(it saves its whole state file per command; the broker serves nobody meanwhile), broker start time and memory,
and one reconcile pass (database vs broker). The N filler logins share one password hash (built once: only the
new locks log in); everything else is the product's own path.
"""
from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from tools.mqttprobe import connect_once

SIZES = [int(x) for x in os.environ.get("KEYDROP_LOGINS_N", "10000,100000").split(",") if x]
TRIALS = 5
TARGET_MS = 2000


def fillers(n: int) -> list[dict]:
    from tools.mosquitto import dynsec_client
    one = dynsec_client("x", "filler")
    return [dict(one, username=f"{0xF1000000000 + i:012x}", clientid=f"kd-{0xF1000000000 + i:012x}")
            for i in range(n)]


def run_size(n: int, tmp: Path) -> dict:
    import sqlalchemy as sa
    from cloud import broker_credentials, create_app, domain
    from cloud.extensions import db
    from cloud.models import Lock, mqtt_password
    from cloud.timeutil import utcnow
    from tools.mosquitto import Mosquitto

    t = time.monotonic()
    broker = Mosquitto(tmp / "mqtt", extra_clients=fillers(n))
    t0 = time.monotonic()
    broker.start(timeout=300)
    start_s = time.monotonic() - t0
    rss = int(Path(f"/proc/{broker.proc.pid}/status").read_text().split("VmRSS:")[1].split()[0]) // 1024
    config = {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp / 'logins.sqlite3'}", "TESTING": True,
              "MAIL_SUPPRESS_SEND": True, **broker.admin_env()}
    app = create_app(config)
    out: dict = {"bench": "broker_logins", "locks": n}
    try:
        with app.app_context():
            db.create_all()
            agency, owner = domain.create_agency(name="Logins", email="logins@bench.example.com",
                                                 password="logins bench pw")
            now, secret = utcnow(), os.urandom(32)
            rows = [{"id": f"{0xF1000000000 + i:012x}", "agency_id": agency.id, "name": "x", "address": "x",
                     "timezone": "UTC", "secret": secret, "backup_key": "5820", "status": "registered",
                     "registered_at": now, "desired_revision": 1, "acked_revision": 0} for i in range(n)]
            for i in range(0, n, 10_000):
                db.session.execute(sa.insert(Lock), rows[i:i + 10_000])
            db.session.commit()
            print(f"  {n} locks: database and broker ready in {time.monotonic() - t:.1f} s "
                  f"(broker start {start_s:.1f} s, {rss} MB resident)", flush=True)

            totals, grants = [], []
            for k in range(TRIALS):
                mac = f"{0xF2000000000 + k:012x}"
                t0 = time.monotonic()
                lock = domain.register_lock(agency, mac=mac, name=f"New {k}", address="1 Bench Road",
                                            timezone="UTC", by=owner)
                t1 = time.monotonic()
                rc = connect_once(broker.port, broker_credentials.lock_client_id(mac), mac,
                                  mqtt_password(lock.secret))
                t2 = time.monotonic()
                if rc != 0:
                    raise RuntimeError(f"lock {mac} was refused (CONNACK {rc}) right after its registration")
                grants.append((t1 - t0) * 1000)
                totals.append((t2 - t0) * 1000)
            t0 = time.monotonic()
            rec = broker_credentials.reconcile()
            rec_s = time.monotonic() - t0
    finally:
        broker.stop()
    out.update(register_to_connect_p50_ms=round(statistics.median(totals)), register_to_connect_max_ms=round(
        max(totals)), register_ms_p50=round(statistics.median(grants)), broker_start_s=round(start_s, 1),
        broker_rss_mb=rss, reconcile_s=round(rec_s, 2), reconcile_changes=rec["created"] + rec["deleted"],
        target_ms=TARGET_MS, ok=max(totals) <= TARGET_MS)
    print(f"  {n} locks: register → login accepted p50 {out['register_to_connect_p50_ms']} ms, max "
          f"{out['register_to_connect_max_ms']} ms over {TRIALS} new locks (target ≤ {TARGET_MS} ms: "
          f"{'ok' if out['ok'] else 'MISSED'}); of which registration incl. the broker command p50 "
          f"{out['register_ms_p50']} ms; reconcile pass {rec_s:.2f} s ({out['reconcile_changes']} changes)")
    return out


def main() -> int:
    from tools.mosquitto import DYNSEC_PLUGIN, MOSQUITTO
    if not (os.path.exists(MOSQUITTO) and os.path.exists(DYNSEC_PLUGIN)):
        print("broker_logins: mosquitto or its dynamic-security plugin is not installed; skipped")
        return 0
    for n in SIZES:
        with tempfile.TemporaryDirectory(prefix="keydrop-logins-") as tmp:
            print(json.dumps(run_size(n, Path(tmp))), flush=True)
    return 0
