"""Cloud benchmark: code generation through the JSON API on SQLite (in-process WSGI, no network).

Figures:
- latency of POST /api/v1/locks/<id>/codes, from request to response, which is sent only after the code and
  its outbox rows (agency copy + customer copy) are committed: median and p99;
- requests/s of that endpoint, and as a ratio to a trivial endpoint of the same app in the same run
  (GET /api/v1/me: same token auth, one indexed lookup, no write).
"""
from __future__ import annotations

import logging
import statistics
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

N_CODES = 300
N_LOCKS = 3  # a lock holds at most 200 live codes (domain.MAX_LIVE_CODES): spread the requests round-robin
N_TRIVIAL = 600


def _pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s)) - 1))]


def main() -> int:
    logging.disable(logging.WARNING)
    from cloud import create_app, domain
    from cloud.extensions import db
    from cloud.models import Code, Lock, OutboxMail

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.sqlite3'}"
        app = create_app({"SQLALCHEMY_DATABASE_URI": url, "TESTING": True, "RATELIMIT_ENABLED": False,
                          "SECRET_KEY": "bench"})
        with app.app_context():
            db.create_all()
            agency, owner = domain.create_agency(name="Bench", email="bench@example.com", password="bench password")
            lock_ids = []
            for n in range(N_LOCKS):
                lock = domain.register_lock(agency, mac=f"24a16054ab{n:02x}", name=f"Bench flat {n}",
                                            address="1 Bench Road", timezone="Europe/Paris", by=owner)
                domain.lock_hello(lock, firmware="bench", boot_count=1, lock_time=None, revision=0)
                lock_ids.append(lock.id)
        client = app.test_client()
        token = client.post("/api/v1/tokens", auth=("bench@example.com", "bench password")).get_json()["token"]
        headers = {"Authorization": f"Bearer {token}"}

        # warm-up (template compilation, first connections)
        for _ in range(20):
            assert client.get("/api/v1/me", headers=headers).status_code == 200

        start = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(hours=1)
        lat: list[float] = []
        t0 = time.perf_counter()
        for i in range(N_CODES):
            body = {"valid_from": (start + timedelta(days=i)).isoformat(),
                    "valid_until": (start + timedelta(days=i + 3)).isoformat(),
                    "customer_name": f"Guest {i}", "customer_email": f"guest{i}@example.com"}
            a = time.perf_counter()
            resp = client.post(f"/api/v1/locks/{lock_ids[i % N_LOCKS]}/codes", headers=headers, json=body)
            lat.append(time.perf_counter() - a)
            if resp.status_code != 201:
                print(f"unexpected {resp.status_code}: {resp.get_json()}")
                return 1
        code_rps = N_CODES / (time.perf_counter() - t0)

        t0 = time.perf_counter()
        for _ in range(N_TRIVIAL):
            client.get("/api/v1/me", headers=headers)
        trivial_rps = N_TRIVIAL / (time.perf_counter() - t0)

        with app.app_context():
            codes = db.session.scalar(db.select(db.func.count(Code.id)))
            outbox = db.session.scalar(db.select(db.func.count(OutboxMail.id)).where(OutboxMail.kind.like("code_%")))
            db.engine.dispose()
        if codes != N_CODES or outbox != 2 * N_CODES:
            print(f"integrity check failed: {codes} codes, {outbox} outbox rows")
            return 1

    ms = [x * 1000 for x in lat]
    print(f"code generation via API on SQLite ({N_CODES} requests, each committing 1 code + 2 outbox rows):")
    print(f"  latency median {statistics.median(ms):.2f} ms, p99 {_pct(ms, 99):.2f} ms, max {max(ms):.2f} ms")
    print(f"  throughput {code_rps:.0f} req/s; trivial endpoint (GET /api/v1/me) {trivial_rps:.0f} req/s; "
          f"ratio {code_rps / trivial_rps:.2f}")
    print(f"  (in-process WSGI test client, one thread, SQLite file with default journal/sync settings)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
