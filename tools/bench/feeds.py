"""Feed benchmark: how long a change in a reservation feed takes to reach the lock, end to end.

The e2e stack (tests/e2e/e2e_stack.py: mosquitto with TLS, web, mailer, bridge, SMTP sink), the
`flask --app cloud calendars` worker, one simulated lock (the firmware on the MicroPython unix port) and a real
local HTTP server serving the feed. Each round adds a reservation to the feed (clock stops when the lock has
acknowledged its code; the code is then typed at the keypad and must open), then shortens it (clock stops when
the lock acknowledged the moved window). CALENDAR_POLL_S=1 so the figures are the pipeline; in production the
wait for the next poll (CALENDAR_POLL_S, default 900 s) comes on top.

`python -m tools.bench feeds`; KEYDROP_FEEDS_ROUNDS (default 10). A change not on the lock within 120 s is
counted as lost and fails the benchmark.
"""
from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parents[2]
for p in (ROOT, ROOT / "tests" / "e2e"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

ROUNDS = int(os.environ.get("KEYDROP_FEEDS_ROUNDS", "10"))
DEADLINE_S = 120.0
MAC = "24a16054be01"


def _pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, int(round(p / 100 * (len(xs) - 1)))))]


def _feed(events: list[tuple[str, object, object]]) -> bytes:
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//Airbnb Inc//Hosting Calendar 1.0//EN"]
    for uid, first, last in events:
        lines += ["BEGIN:VEVENT", f"DTSTART;VALUE=DATE:{first:%Y%m%d}", f"DTEND;VALUE=DATE:{last:%Y%m%d}",
                  f"UID:{uid}", "SUMMARY:Reserved", "END:VEVENT"]
    return ("\r\n".join(lines + ["END:VCALENDAR"]) + "\r\n").encode()


def _wait(pred, deadline_s: float):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    return None


def main() -> int:
    from e2e_stack import FLASK, Stack, mosquitto_available
    from tests.httpfixtures import FeedServer
    if not mosquitto_available():
        print("feeds: mosquitto is not installed; skipped")
        return 1
    srv = FeedServer().start()
    new_s: list[float] = []
    moved_s: list[float] = []
    lost = 0
    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack(Path(tmp))
        stack.env.update(CALENDAR_ALLOW_PRIVATE_HOSTS="1", CALENDAR_POLL_S="1")
        with stack.running():
            stack._proc("calendars", [FLASK, "--app", "cloud", "calendars", "--tick", "0.2"])
            lk = stack.new_lock(MAC)
            lk.link_event("state", "connected", timeout=90)
            _wait(lambda: stack.api("GET", f"/api/v1/locks/{MAC}")[1].get("status") == "active", 60)
            stack.api("PATCH", f"/api/v1/locks/{MAC}", {"checkin_time": "00:00", "checkout_time": "11:00"})
            today = datetime.now(ZoneInfo("Europe/Paris")).date()
            events: list[tuple[str, object, object]] = []
            srv.documents["listing"] = _feed(events)
            stack.api("PUT", f"/api/v1/locks/{MAC}/calendar", {"url": srv.url("listing")})
            for i in range(ROUNDS):
                uid = f"bench-{i}@airbnb.com"
                events.append((uid, today, today + timedelta(days=3)))
                t0 = time.monotonic()
                srv.documents["listing"] = _feed(events)

                def on_lock(uid=uid):
                    _, body = stack.api("GET", f"/api/v1/codes?lock_id={MAC}&status=active")
                    got = [c for c in body.get("codes", []) if c["reservation_uid"] == uid and c["on_lock_at"]]
                    return got[0] if got else None
                code = _wait(on_lock, DEADLINE_S)
                if code is None:
                    lost += 1
                    continue
                new_s.append(time.monotonic() - t0)
                if lk.enter(code["code"])[0] != "open":
                    print(f"round {i}: the feed's code did not open the door")
                    lost += 1
                events[-1] = (uid, today, today + timedelta(days=2))
                t1 = time.monotonic()
                srv.documents["listing"] = _feed(events)

                def moved(code=code):
                    _, c = stack.api("GET", f"/api/v1/codes/{code['id']}")
                    return c.get("valid_until") != code["valid_until"] and c.get("on_lock_at")
                if _wait(moved, DEADLINE_S):
                    moved_s.append(time.monotonic() - t1)
                else:
                    lost += 1
    srv.stop()
    for name, xs in (("new reservation -> code acknowledged by the lock", new_s),
                     ("changed dates -> moved window acknowledged by the lock", moved_s)):
        if xs:
            print(f"{name}: n={len(xs)} median {statistics.median(xs):.2f} s, p90 {_pct(xs, 90):.2f} s, "
                  f"max {max(xs):.2f} s")
    print(f"rounds {ROUNDS}, lost {lost} (not on the lock within {DEADLINE_S:.0f} s, or did not open); "
          "CALENDAR_POLL_S=1 here: add up to CALENDAR_POLL_S (default 900 s) in production")
    return 1 if lost or len(new_s) < ROUNDS else 0


if __name__ == "__main__":
    sys.exit(main())
