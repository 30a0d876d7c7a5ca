"""Reservation feeds -> codes, against a real local HTTP server serving feeds in Airbnb / Booking.com / Vrbo /
PMS shapes (tests/fixtures/feeds/). The sync runs at a fixed `now` before the fixtures' stays."""
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from cloud.extensions import db
from cloud.models import CalendarFeed, Code, Lock, OutboxMail
from tests.httpfixtures import feed_fixture

UTC = timezone.utc
NOW = datetime(2030, 6, 1, 8, 0, tzinfo=UTC)
POLL = timedelta(seconds=900)  # CALENDAR_POLL_S by default


def H(token):
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def app_config(app_config):
    return dict(app_config, CALENDAR_ALLOW_PRIVATE_HOSTS=True, CALENDAR_TIMEOUT_S=1.0)


@pytest.fixture
def setup(app, client, api_token, make_agency, make_lock, feed_server):
    """An agency, an active lock in Europe/Paris, a token; returns a helper to attach a named feed."""
    ag = make_agency()
    token = api_token(ag)
    lock_id = make_lock(ag)

    class S:
        agency, lock, t, srv = ag, lock_id, token, feed_server

        @staticmethod
        def attach(name: str, body: bytes | None = None):
            feed_server.documents[name] = body if body is not None else feed_fixture(name)
            resp = client.put(f"/api/v1/locks/{lock_id}/calendar", headers=H(token),
                              json={"url": feed_server.url(name)})
            assert resp.status_code == 201, resp.get_json()

        @staticmethod
        def sync(now=NOW) -> dict:
            from cloud.feeds.sync import sync_due
            with app.app_context():
                return sync_due(now=now, every=True)

        @staticmethod
        def codes(live_only=True):
            with app.app_context():
                q = sa.select(Code).where(Code.lock_id == lock_id).order_by(Code.valid_from)
                rows = db.session.scalars(q).all()
                db.session.expunge_all()
                return [c for c in rows if not live_only or c.revoked_at is None]

        @staticmethod
        def mails(kind):
            with app.app_context():
                return db.session.scalars(sa.select(OutboxMail).where(OutboxMail.kind == kind)
                                          .order_by(OutboxMail.id)).all()

        @staticmethod
        def status():
            return client.get(f"/api/v1/locks/{lock_id}/calendar", headers=H(token)).get_json()
    return S


def test_airbnb_feed_makes_one_code_per_reservation_and_resync_changes_nothing(setup, client):
    setup.attach("airbnb")
    assert setup.sync()["created"] == 2
    codes = setup.codes()
    assert [(c.valid_from, c.valid_until) for c in codes] == [
        # all-day events: check-in 15:00 on DTSTART, check-out 11:00 on DTEND, Europe/Paris (CEST, UTC+2)
        (datetime(2030, 7, 5, 13, 0, tzinfo=UTC), datetime(2030, 7, 10, 9, 0, tzinfo=UTC)),
        (datetime(2030, 7, 12, 13, 0, tzinfo=UTC), datetime(2030, 7, 16, 9, 0, tzinfo=UTC))]
    assert {c.source for c in codes} == {"calendar"} and all(c.reservation_uid.endswith("@airbnb.com") for c in codes)
    body = client.get(f"/api/v1/codes/{codes[0].id}", headers=H(setup.t)).get_json()
    assert body["source"] == "calendar" and body["reservation_uid"] == codes[0].reservation_uid
    st = setup.status()
    assert (st["events_seen"], st["reservations_seen"], st["last_error"], st["codes"]) == (3, 2, None, 2)
    assert st["last_sync_at"] == "2030-06-01T08:00:00Z"
    owner_mails = setup.mails("code_agency")
    assert len(owner_mails) == 2 and all(m.recipient == setup.agency.email for m in owner_mails)
    assert "calendar feed" in owner_mails[0].text_body and codes[0].code in owner_mails[0].text_body
    assert setup.mails("code_customer") == []  # the feed carries no guest email

    # re-sync: conditional GET answered 304, nothing changes; and a full fetch of the same feed changes nothing
    revision = _revision(setup)
    assert setup.sync()["created"] == 0
    assert setup.srv.hits("airbnb")[-1]["headers"].get("If-None-Match")
    setup.srv.documents["airbnb"] = feed_fixture("airbnb") + b"\r\n"  # new ETag, same events
    result = setup.sync()
    assert (result["created"], result["moved"], result["revoked"]) == (0, 0, 0)
    assert [(c.id, c.code, c.valid_from) for c in setup.codes()] == [(c.id, c.code, c.valid_from) for c in codes]
    assert len(setup.mails("code_agency")) == 2 and _revision(setup) == revision


def _revision(setup):
    return [c.revision for c in setup.codes()]


def test_changed_dates_move_the_same_code_and_tell_the_owner(setup):
    setup.attach("airbnb")
    setup.sync()
    before = setup.codes()
    setup.srv.documents["airbnb"] = feed_fixture("airbnb").replace(b"DTEND;VALUE=DATE:20300710",
                                                                   b"DTEND;VALUE=DATE:20300711")
    result = setup.sync()
    assert result["moved"] == 1 and result["created"] == 0
    after = setup.codes()
    assert [(c.id, c.code) for c in after] == [(c.id, c.code) for c in before]  # the guest keeps the code
    assert after[0].valid_until == datetime(2030, 7, 11, 9, 0, tzinfo=UTC) and after[0].revision > before[0].revision
    assert after[0].on_lock_at is None  # the lock must confirm the new window
    moved = setup.mails("code_moved")
    assert len(moved) == 1 and moved[0].recipient == setup.agency.email
    assert "2030-07-10 11:00" in moved[0].text_body and "2030-07-11 11:00" in moved[0].text_body
    assert "keeps the code" in moved[0].text_body


def test_new_digits_on_a_move_are_mailed_to_a_known_guest(setup, app, client, deliver_mail, smtp_server):
    """The moved stay's digits are held by another stay on the new dates: the code gets new digits, and a guest
    whose email is known gets them (the owner is told so); a guest whose digits did not change gets nothing."""
    setup.attach("airbnb")
    setup.sync()
    first, second = setup.codes()
    for code, email in [(first, "lea@example.com"), (second, "tom@example.com")]:
        assert client.patch(f"/api/v1/codes/{code.id}", headers=H(setup.t),
                            json={"customer_email": email}).status_code == 200
    with app.app_context():
        db.session.get(Code, second.id).code = first.code  # allowed: the stays do not overlap
        db.session.commit()
    deliver_mail()
    sent_before = len(smtp_server.to("lea@example.com"))
    # the first stay now ends on the 13th, overlapping the second, whose digits are the same
    setup.srv.documents["airbnb"] = feed_fixture("airbnb").replace(b"DTEND;VALUE=DATE:20300710",
                                                                   b"DTEND;VALUE=DATE:20300713")
    assert setup.sync()["moved"] == 1
    moved = {c.id: c for c in setup.codes()}[first.id]
    assert moved.code != first.code
    (owner,) = setup.mails("code_moved")
    assert "was emailed their new code" in owner.text_body and "lea@example.com" in owner.text_body
    deliver_mail()
    lea = smtp_server.to("lea@example.com")
    assert len(lea) == sent_before + 1
    text = smtp_server.text(lea[-1])
    assert moved.code in text and "13" in text
    assert len(smtp_server.to("tom@example.com")) == 1  # only the copy sent when the email was added


def test_cancelled_reservation_is_revoked_at_once_vanished_after_two_good_syncs(setup):
    setup.attach("airbnb")
    setup.sync()
    first, second = setup.codes()
    doc = feed_fixture("airbnb").decode()
    # the first reservation disappears, the second is marked cancelled
    events = doc.split("BEGIN:VEVENT")
    gone = "BEGIN:VEVENT".join([events[0]] + events[2:])
    gone = gone.replace(f"UID:{second.reservation_uid}\r\n", f"UID:{second.reservation_uid}\r\nSTATUS:CANCELLED\r\n")
    setup.srv.documents["airbnb"] = gone.encode()
    assert setup.sync()["revoked"] == 1
    assert [c.id for c in setup.codes()] == [first.id]  # absent once: kept
    # a failed fetch in between does not count as a sync
    setup.srv.status["airbnb"] = 503
    assert setup.sync(NOW + POLL)["failed"] == 1 and [c.id for c in setup.codes()] == [first.id]
    del setup.srv.status["airbnb"]
    assert setup.sync(NOW + POLL)["revoked"] == 1  # second good sync without it, CALENDAR_POLL_S later
    assert setup.codes() == []
    cancelled = setup.mails("code_cancelled")
    assert len(cancelled) == 2 and {m.recipient for m in cancelled} == {setup.agency.email}
    assert any("cancelled in the feed" in m.text_body for m in cancelled)
    assert any("two syncs in a row" in m.text_body for m in cancelled)
    # nothing comes back on later syncs
    assert setup.sync(NOW + 2 * POLL)["created"] == 0 and setup.codes() == []


@pytest.mark.parametrize("breakage", ["http500", "garbage", "html", "empty", "down", "timeout", "too_big"])
def test_a_broken_feed_changes_nothing_and_shows_the_error(setup, app, breakage):
    setup.attach("airbnb")
    setup.sync()
    before = [(c.id, c.code, c.valid_from, c.valid_until) for c in setup.codes()]
    good_sync = setup.status()["last_sync_at"]
    srv = setup.srv
    if breakage == "http500":
        srv.status["airbnb"] = 500
    elif breakage == "garbage":
        srv.documents["airbnb"] = b"\x00\xff\xfe garbage \x13\x37" * 50
    elif breakage == "html":
        srv.documents["airbnb"] = b"<!doctype html><html><body>Please log in</body></html>"
    elif breakage == "empty":
        srv.documents["airbnb"] = b""
    elif breakage == "down":
        srv.down = True
    elif breakage == "timeout":
        srv.delay_s = 2.5  # CALENDAR_TIMEOUT_S is 1 s here
    elif breakage == "too_big":
        app.config["CALENDAR_MAX_BYTES"] = 1000
        srv.documents["airbnb"] = feed_fixture("airbnb") + b" " * 2000
    for later in range(3):  # never revokes, however many times it fails
        result = setup.sync(now=NOW.replace(hour=9 + later))
        assert result["failed"] == 1, result
    assert [(c.id, c.code, c.valid_from, c.valid_until) for c in setup.codes()] == before
    st = setup.status()
    assert st["last_error"] and st["last_sync_at"] == good_sync, st
    expected = {"http500": "HTTP 500", "garbage": "iCal", "html": "iCal", "empty": "empty", "down": "reach",
                "timeout": "within", "too_big": "larger"}[breakage]
    assert expected in st["last_error"], st["last_error"]
    assert setup.mails("code_cancelled") == []


def _emptied():
    return feed_fixture("airbnb").split(b"BEGIN:VEVENT")[0] + b"END:VCALENDAR\r\n"


def test_an_emptied_feed_revokes_only_after_two_good_syncs_a_poll_apart(setup):
    """Sync now twice (or --once twice) of an emptied export revokes nothing; the same answer a poll interval
    later does."""
    setup.attach("airbnb")
    setup.sync()
    setup.srv.documents["airbnb"] = _emptied()
    assert setup.sync(NOW + timedelta(minutes=1))["revoked"] == 0 and len(setup.codes()) == 2
    assert setup.status()["events_seen"] == 0
    assert setup.sync(NOW + timedelta(minutes=1, seconds=5))["revoked"] == 0  # seconds later
    assert setup.sync(NOW + timedelta(minutes=14))["revoked"] == 0 and len(setup.codes()) == 2
    assert setup.sync(NOW + timedelta(minutes=1) + POLL)["revoked"] == 2 and setup.codes() == []


def test_a_feed_served_empty_for_a_moment_revokes_nothing(setup):
    setup.attach("airbnb")
    setup.sync()
    setup.srv.documents["airbnb"] = _emptied()
    assert setup.sync(NOW + timedelta(minutes=1))["revoked"] == 0
    setup.srv.documents["airbnb"] = feed_fixture("airbnb")
    assert setup.sync(NOW + POLL)["revoked"] == 0
    setup.srv.documents["airbnb"] = _emptied()  # empty again, later: the count starts over
    assert setup.sync(NOW + 2 * POLL)["revoked"] == 0 and len(setup.codes()) == 2


def test_a_sync_that_loses_every_reservation_does_not_confirm_on_its_own(setup):
    """A reservation missing for long is revoked at the second good sync without it; but when that sync lost
    every live reservation at once, it is believed only after the next one shows the same."""
    setup.attach("airbnb")
    setup.sync()
    first, second = setup.codes()
    doc = feed_fixture("airbnb").decode()
    events = doc.split("BEGIN:VEVENT")
    setup.srv.documents["airbnb"] = "BEGIN:VEVENT".join([events[0]] + events[2:]).encode()  # the first goes
    assert setup.sync(NOW + timedelta(minutes=1))["revoked"] == 0
    setup.srv.documents["airbnb"] = _emptied()  # then everything at once
    assert setup.sync(NOW + timedelta(minutes=1) + POLL)["revoked"] == 0 and len(setup.codes()) == 2
    assert setup.sync(NOW + timedelta(minutes=1) + 2 * POLL)["revoked"] == 2 and setup.codes() == []


def test_a_partly_vanished_feed_revokes_a_poll_later(setup):
    setup.attach("airbnb")
    setup.sync()
    first, second = setup.codes()
    events = feed_fixture("airbnb").decode().split("BEGIN:VEVENT")
    setup.srv.documents["airbnb"] = "BEGIN:VEVENT".join([events[0]] + events[2:]).encode()
    assert setup.sync(NOW + timedelta(minutes=1))["revoked"] == 0
    assert setup.sync(NOW + timedelta(minutes=2))["revoked"] == 0  # a 304 seconds later: not yet
    assert setup.sync(NOW + timedelta(minutes=1) + POLL)["revoked"] == 1
    assert [c.id for c in setup.codes()] == [second.id]


def test_a_reservation_that_failed_is_tried_again_while_the_feed_is_unchanged(setup, monkeypatch):
    """A reservation refused once (here: the lock holds its maximum of live codes) becomes a code at a later
    sync once it can, although the feed did not change (no 304 hides it)."""
    from cloud import domain
    setup.attach("airbnb")
    monkeypatch.setattr(domain, "MAX_LIVE_CODES", 1)
    first = setup.sync()
    assert first["created"] == 1 and "codes that have not ended" in setup.status()["last_error"]
    monkeypatch.setattr(domain, "MAX_LIVE_CODES", 200)
    assert setup.sync()["created"] == 1 and len(setup.codes()) == 2
    assert setup.status()["last_error"] is None
    assert setup.sync()["created"] == 0 and setup.srv.hits("airbnb")[-1]["headers"].get("If-None-Match")


def test_validators_too_long_for_their_columns_are_not_kept(setup, app):
    setup.attach("airbnb")
    setup.srv.etags["airbnb"] = '"' + "e" * 400 + '"'
    setup.srv.last_modified["airbnb"] = "Tue, 01 Jan 2030 00:00:00 GMT" + "x" * 100
    assert setup.sync()["created"] == 2
    with app.app_context():
        feed = db.session.scalar(sa.select(CalendarFeed))
        assert feed.etag is None and feed.last_modified is None and feed.last_error is None
    assert setup.sync()["created"] == 0  # a full fetch of the same document: nothing changes
    assert "If-None-Match" not in setup.srv.hits("airbnb")[-1]["headers"]


def test_last_modified_is_sent_back_as_if_modified_since(setup):
    setup.attach("airbnb")
    setup.srv.etags["airbnb"] = None  # a server without ETags
    setup.srv.last_modified["airbnb"] = "Tue, 01 Jan 2030 00:00:00 GMT"
    assert setup.sync()["created"] == 2
    assert setup.sync()["created"] == 0
    assert setup.srv.hits("airbnb")[-1]["headers"].get("If-Modified-Since") == "Tue, 01 Jan 2030 00:00:00 GMT"
    assert setup.status()["last_error"] is None and len(setup.codes()) == 2


def test_booking_vrbo_and_timed_pms_feeds(setup, app, client):
    # Booking.com calls every booked period "CLOSED - Not available": all its events are stays
    setup.attach("booking")
    setup.sync()
    assert [(c.valid_from.date().isoformat(), c.valid_until.date().isoformat()) for c in setup.codes()] == [
        ("2030-08-01", "2030-08-04"), ("2030-08-06", "2030-08-09")]
    # Vrbo: "Reserved - <guest>" is a stay with the guest's name, "Blocked" is skipped; replacing the URL makes
    # the Booking.com codes absent from the new feed (revoked after two syncs a poll interval apart)
    setup.srv.documents["vrbo"] = feed_fixture("vrbo")
    assert client.put(f"/api/v1/locks/{setup.lock}/calendar", headers=H(setup.t),
                      json={"url": setup.srv.url("vrbo")}).status_code == 200
    setup.sync()
    setup.sync(NOW + POLL)
    codes = setup.codes()
    assert [(c.customer_name, c.valid_from) for c in codes] == [("Ana Lima", datetime(2030, 9, 3, 13, 0, tzinfo=UTC))]
    assert setup.status()["reservations_seen"] == 1 and setup.status()["events_seen"] == 2
    # timed events take their dates at the property; owner stays and cancelled reservations are not stays
    setup.srv.documents["pms"] = feed_fixture("pms_timed")
    client.put(f"/api/v1/locks/{setup.lock}/calendar", headers=H(setup.t), json={"url": setup.srv.url("pms")})
    setup.sync(NOW + 2 * POLL)
    setup.sync(NOW + 3 * POLL)
    assert [(c.customer_name, c.valid_from, c.valid_until) for c in setup.codes()] == [
        ("Jonas Berg", datetime(2030, 10, 10, 13, 0, tzinfo=UTC), datetime(2030, 10, 13, 9, 0, tzinfo=UTC)),
        # 2030-10-26T23:00Z is already the 27th in Paris, the day winter time (UTC+1) starts
        ("Mia Chen", datetime(2030, 10, 27, 14, 0, tzinfo=UTC), datetime(2030, 10, 28, 10, 0, tzinfo=UTC))]


def test_new_checkin_time_moves_calendar_codes_not_manual_ones(setup, client):
    setup.attach("airbnb")
    setup.sync()
    resp = client.patch(f"/api/v1/locks/{setup.lock}", headers=H(setup.t), json={"checkin_time": "16:00"})
    assert resp.status_code == 200
    assert setup.sync()["moved"] == 2
    assert [c.valid_from.hour for c in setup.codes()] == [14, 14]


def test_a_code_revoked_by_staff_is_not_brought_back_by_the_feed(setup, client):
    setup.attach("airbnb")
    setup.sync()
    first = setup.codes()[0]
    assert client.delete(f"/api/v1/codes/{first.id}", headers=H(setup.t)).status_code == 200
    assert setup.sync()["created"] == 0
    setup.srv.documents["airbnb"] += b"\r\n"
    assert setup.sync()["created"] == 0 and first.id not in [c.id for c in setup.codes()]


def test_feed_waits_for_the_lock_to_be_active(app, client, api_token, make_agency, make_lock, feed_server):
    ag = make_agency()
    t = api_token(ag)
    lock_id = make_lock(ag, active=False)
    feed_server.documents["airbnb"] = feed_fixture("airbnb")
    client.put(f"/api/v1/locks/{lock_id}/calendar", headers=H(t), json={"url": feed_server.url("airbnb")})
    from cloud.feeds.sync import sync_due
    with app.app_context():
        assert sync_due(now=NOW, every=True)["failed"] == 1
    st = client.get(f"/api/v1/locks/{lock_id}/calendar", headers=H(t)).get_json()
    assert "not come online" in st["last_error"]


def test_guest_email_added_later_gets_the_guest_copy(setup, client, login, deliver_mail, smtp_server):
    setup.attach("airbnb")
    setup.sync()
    first, second = setup.codes()
    resp = client.patch(f"/api/v1/codes/{first.id}", headers=H(setup.t),
                        json={"customer_email": "Guest@Example.com", "customer_name": "Lea"})
    assert resp.status_code == 200 and resp.get_json()["customer_email"] == "guest@example.com"
    for bad in [{"customer_email": "nope"}, {"code": "1234"}, {"send_guest_copy": "yes"}]:
        assert client.patch(f"/api/v1/codes/{first.id}", headers=H(setup.t), json=bad).status_code == 400
    # the web form, for the other code
    login(client, setup.agency)
    page = client.get(f"/codes/{second.id}/guest")
    assert page.status_code == 200
    resp = client.post(f"/codes/{second.id}/guest", data={"customer_email": "tom@example.com", "customer_name": ""})
    assert resp.status_code == 302
    deliver_mail()
    lea, tom = smtp_server.to("guest@example.com"), smtp_server.to("tom@example.com")
    assert len(lea) == 1 and first.code in smtp_server.text(lea[0])
    assert len(tom) == 1 and second.code in smtp_server.text(tom[0]) and smtp_server.html(tom[0])


def test_feed_api_and_page(setup, client, login, api_token):
    assert client.get(f"/api/v1/locks/{setup.lock}/calendar", headers=H(setup.t)).status_code == 404
    for bad in [{}, {"url": 5}, {"url": ""}, {"url": "ftp://example.com/x.ics"}, {"url": "file:///etc/passwd"},
                {"url": "https://" + "a" * 2000 + ".com/x.ics"}, {"url": "not a url"}]:
        resp = client.put(f"/api/v1/locks/{setup.lock}/calendar", headers=H(setup.t), json=bad)
        assert resp.status_code == 400 and resp.get_json()["message"], bad
    setup.attach("airbnb")
    other = api_token()
    assert client.get(f"/api/v1/locks/{setup.lock}/calendar", headers=H(other)).status_code == 404
    assert client.delete(f"/api/v1/locks/{setup.lock}/calendar", headers=H(other)).status_code == 404
    setup.sync()
    login(client, setup.agency)
    page = client.get(f"/locks/{setup.lock}/feed").get_data(as_text=True)
    assert "Codes from the feed" in page and setup.codes()[0].code in page and "add guest email" in page
    resp = client.post(f"/locks/{setup.lock}/feed", data={"url": "gopher://example.com/"})
    assert resp.status_code == 400 and "http" in resp.get_data(as_text=True)
    assert client.post(f"/locks/{setup.lock}/feed/sync").status_code == 302
    assert client.delete(f"/api/v1/locks/{setup.lock}/calendar", headers=H(setup.t)).status_code == 204
    assert client.get(f"/api/v1/locks/{setup.lock}/calendar", headers=H(setup.t)).status_code == 404
    assert len(setup.codes()) == 2  # removing the feed keeps its codes


def test_webcal_scheme_is_https(app, setup):
    from cloud.feeds.manage import normalise_url
    with app.test_request_context():
        assert normalise_url(" webcal://127.0.0.1/x.ics ") == "https://127.0.0.1/x.ics"


def test_control_characters_from_a_feed_are_stored_safely(setup):
    """PostgreSQL refuses NUL in text: feed-supplied UIDs and summaries are made printable first."""
    doc = feed_fixture("vrbo").replace(b"UID:9a8b7c6d", b"UID:9a8b\x00\x1b7c6d").replace(b"Ana Lima", b"Ana\x00Lima")
    setup.attach("vrbo", doc)
    assert setup.sync()["created"] == 1
    (code,) = setup.codes()
    assert code.reservation_uid.startswith("9a8b??7c6d") and code.customer_name == "Ana?Lima"


def test_calendars_once_cli(setup, app):
    setup.attach("airbnb")
    result = app.test_cli_runner().invoke(args=["calendars", "--once"])
    assert result.exit_code == 0 and "feeds=1 failed=0" in result.output, result.output
    setup.srv.status["airbnb"] = 500
    result = app.test_cli_runner().invoke(args=["calendars", "--once"])
    assert result.exit_code == 1 and "failed=1" in result.output
    result = app.test_cli_runner().invoke(args=["automation", "--once"])
    assert result.exit_code == 0 and "not_ready=" in result.output


def test_the_worker_skips_a_feed_attempted_less_than_a_poll_ago(setup, app):
    from cloud.feeds.sync import sync_due
    setup.attach("airbnb")
    with app.app_context():
        assert sync_due(now=NOW)["feeds"] == 1  # never attempted: due
        assert sync_due(now=NOW + timedelta(seconds=899))["feeds"] == 0
        assert sync_due(now=NOW + timedelta(seconds=899), every=True)["feeds"] == 1  # --once, Sync now
        assert sync_due(now=NOW + timedelta(seconds=899 + 900))["feeds"] == 1
    assert len(setup.srv.hits("airbnb")) == 3


def test_a_decommissioned_lock_feed_is_not_fetched(setup, app):
    from cloud import domain
    from cloud.models import User
    setup.attach("airbnb")
    setup.sync()
    with app.app_context():
        domain.decommission_lock(db.session.get(Lock, setup.lock), by=db.session.get(User, setup.agency.owner_id))
    hits = len(setup.srv.hits("airbnb"))
    assert setup.sync()["failed"] == 1 and len(setup.srv.hits("airbnb")) == hits
    with app.app_context():
        assert "decommissioned" in db.session.scalar(sa.select(CalendarFeed.last_error))
