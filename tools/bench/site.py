"""Site benchmark: server time of the main pages for an agency with 30 flats (in-process WSGI, SQLite).

Seeds 30 active locks with 10 codes each (300 codes), 100 access-log entries on one lock, then requests each
page ROUNDS times, logged in as the owner. Prints per page: median, p95 and max in ms, and the page size. Every
answer that is not 200 is counted and fails the benchmark.
"""
from __future__ import annotations

import logging
import statistics
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from tools.bench.cloud import _pct

ROUNDS = 40
N_LOCKS = 30
CODES_PER_LOCK = 10


def main() -> int:
    logging.disable(logging.WARNING)
    from cloud import create_app, domain
    from cloud.extensions import db

    with tempfile.TemporaryDirectory() as tmp:
        app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{Path(tmp) / 'site.sqlite3'}", "TESTING": True,
                          "RATELIMIT_ENABLED": False, "SECRET_KEY": "bench", "WTF_CSRF_ENABLED": False})
        now = datetime.now(timezone.utc).replace(microsecond=0)
        with app.app_context():
            db.create_all()
            agency, owner = domain.create_agency(name="Bench Lets", email="bench@example.com",
                                                 password="bench site passphrase")
            lock_ids = []
            for n in range(N_LOCKS):
                lock = domain.register_lock(agency, mac=f"24a1605400{n:02x}", name=f"Flat {n + 1}",
                                            address=f"{n + 1} Bench Road", timezone="Europe/Paris", by=owner)
                domain.lock_hello(lock, firmware="bench", boot_count=1, lock_time=None, revision=0)
                for c in range(CODES_PER_LOCK):
                    start = now + timedelta(days=3 * c - 2)
                    domain.generate_code(lock, valid_from=start, valid_until=start + timedelta(days=3), by=owner,
                                         customer_name=f"Guest {n}-{c}", customer_email=f"g{n}-{c}@example.com")
                lock_ids.append(lock.id)
            first = db.session.get(type(lock), lock_ids[0])
            domain.record_events(first, [{"seq": i, "t": int(now.timestamp()) - 60 * i, "kind": "opened"}
                                         for i in range(1, 101)])
        client = app.test_client()
        client.post("/login", data={"email": "bench@example.com", "password": "bench site passphrase"})
        pages = [("locks list", "/locks/"), ("lock page", f"/locks/{lock_ids[0]}"),
                 ("calendar", f"/locks/{lock_ids[0]}/calendar"), ("code form", f"/locks/{lock_ids[0]}/codes/new"),
                 ("history (300 codes)", "/codes/"), ("CSV export", "/codes/export.csv"),
                 ("staff", "/staff"), ("account", "/account"), ("login page", "/login")]
        failed = 0
        print(f"{N_LOCKS} locks, {N_LOCKS * CODES_PER_LOCK} codes, {ROUNDS} requests per page (server time)")
        print(f"{'page':22} {'median ms':>10} {'p95 ms':>8} {'max ms':>8} {'KB':>6}")
        for name, path in pages:
            times, size = [], 0
            for _ in range(ROUNDS):
                t0 = time.perf_counter()
                resp = client.get(path)
                times.append((time.perf_counter() - t0) * 1000)
                failed += resp.status_code != 200
                size = len(resp.data)
            print(f"{name:22} {statistics.median(times):10.1f} {_pct(times, 95):8.1f} {max(times):8.1f} "
                  f"{size / 1024:6.1f}")
        # equal work: a wrong password for a real account and for an unknown address (auth/passwords.py)
        anon = app.test_client()
        for label, email in (("known account", "bench@example.com"), ("unknown address", "nobody@example.com")):
            times = []
            for _ in range(ROUNDS // 2):
                t0 = time.perf_counter()
                resp = anon.post("/login", data={"email": email, "password": "wrong password"})
                times.append((time.perf_counter() - t0) * 1000)
                failed += resp.status_code != 200
            print(f"{'wrong login, ' + label:30} median {statistics.median(times):6.1f} ms  "
                  f"p95 {_pct(times, 95):6.1f} ms")
        print(f"unexpected answers: {failed}")
        return 1 if failed else 0
