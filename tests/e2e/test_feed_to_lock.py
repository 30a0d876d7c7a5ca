"""A reservation in an iCal feed becomes a code that opens the simulated door, end to end: a real HTTP server
serving the feed, the `flask --app cloud calendars` worker, the bridge over mosquitto (TLS), the firmware on the
MicroPython unix port. Then the reservation's dates change and the same code's window follows on the lock."""
from __future__ import annotations

import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from e2e_stack import FLASK, Stack, mosquitto_available, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MAC = "24a16054fe01"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    if not mosquitto_available():
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    s = Stack(tmp_path_factory.mktemp("e2e-feed"))
    # everything is on 127.0.0.1 here; the poll period is short so the test measures the pipeline, not the wait
    s.env.update(CALENDAR_ALLOW_PRIVATE_HOSTS="1", CALENDAR_POLL_S="1")
    with s.running():
        s._proc("calendars", [FLASK, "--app", "cloud", "calendars", "--tick", "0.2"])
        yield s


def feed(uid: str, first: datetime, last: datetime) -> bytes:
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//Airbnb Inc//Hosting Calendar 1.0//EN", "BEGIN:VEVENT",
             f"DTSTART;VALUE=DATE:{first:%Y%m%d}", f"DTEND;VALUE=DATE:{last:%Y%m%d}", f"UID:{uid}",
             "SUMMARY:Reserved", "END:VEVENT", "END:VCALENDAR"]
    return ("\r\n".join(lines) + "\r\n").encode()


def test_a_code_born_from_a_feed_opens_the_door_and_follows_a_date_change(stack, feed_server):
    lk = stack.new_lock(MAC)
    lk.link_event("state", "connected", timeout=90)
    wait_until(lambda: stack.api("GET", f"/api/v1/locks/{MAC}")[1].get("status") == "active", 30, "lock active")
    # arrivals from midnight so that today's stay is open now, whatever the hour of the test
    st, _ = stack.api("PATCH", f"/api/v1/locks/{MAC}", {"checkin_time": "00:00", "checkout_time": "11:00"})
    assert st == 200
    today = datetime.now(ZoneInfo("Europe/Paris")).date()
    uid = "e2e-feed-1@airbnb.com"
    feed_server.documents["listing"] = feed(uid, today, today + timedelta(days=2))
    t0 = time.monotonic()
    st, body = stack.api("PUT", f"/api/v1/locks/{MAC}/calendar", {"url": feed_server.url("listing")})
    assert st == 201, body

    def calendar_code():
        st, body = stack.api("GET", f"/api/v1/codes?lock_id={MAC}")
        codes = [c for c in body.get("codes", []) if c["reservation_uid"] == uid and c["status"] != "revoked"]
        return codes[0] if codes and codes[0]["on_lock_at"] else None
    code = wait_until(calendar_code, 60, "the feed's code acknowledged by the lock")
    t_on_lock = time.monotonic() - t0
    assert code["source"] == "calendar"
    outcome, _ = lk.enter(code["code"])
    t_open = time.monotonic() - t0
    assert outcome == "open"
    stack.wait_mail(stack.owner_email, f"Code {code['code']}")

    # the stay is shortened to end tomorrow: the same code, its window moved, acknowledged by the lock again
    t1 = time.monotonic()
    feed_server.documents["listing"] = feed(uid, today, today + timedelta(days=1))

    def moved():
        st, c = stack.api("GET", f"/api/v1/codes/{code['id']}")
        return c if c["valid_until"] != code["valid_until"] and c["on_lock_at"] else None
    after = wait_until(moved, 60, "the moved window acknowledged by the lock")
    t_moved = time.monotonic() - t1
    assert after["code"] == code["code"] and after["id"] == code["id"]
    assert lk.enter(code["code"])[0] == "open"
    stack.wait_mail(stack.owner_email, "stay moved")
    print(f"\nfeed -> lock (CALENDAR_POLL_S=1, worker tick 0.2 s): new reservation on the lock after "
          f"{t_on_lock:.2f} s, door opened at {t_open:.2f} s; date change on the lock after {t_moved:.2f} s")
