"""Webhooks: endpoints per agency (API and page, owner/manager only), events written with the change and POSTed
by the outbox worker to a real local receiver, signed (verified here as a receiver would), retried with backoff
after the receiver was down, with a stable event id; the digits of a code never leave."""
import json
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from cloud import webhooks
from cloud.extensions import db
from cloud.models import WebhookDelivery
from tests.conftest import set_connection

UTC = timezone.utc


def H(token):
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def app_config(app_config):
    return dict(app_config, CALENDAR_ALLOW_PRIVATE_HOSTS=True, WEBHOOK_BACKOFF_BASE_S=30)


def deliver(app, now=None):
    with app.app_context():
        return webhooks.deliver_pending(now=now)


def make_code(client, t, lock_id):
    now = datetime.now(UTC)
    resp = client.post(f"/api/v1/locks/{lock_id}/codes", headers=H(t), json={
        "valid_from": now.isoformat(), "valid_until": (now + timedelta(days=2)).isoformat()})
    assert resp.status_code == 201
    return resp.get_json()


def test_signed_events_reach_the_receiver_and_verify(app, client, api_token, make_agency, make_lock,
                                                     webhook_receiver):
    ag = make_agency()
    t = api_token(ag)
    lock_id = make_lock(ag)
    resp = client.post("/api/v1/webhooks", headers=H(t), json={"url": webhook_receiver.url,
                                                               "events": ["code.created", "code.revoked"]})
    assert resp.status_code == 201
    ep = resp.get_json()
    secret = ep["secret"]
    assert len(secret) == 64 and "secret" not in client.get("/api/v1/webhooks", headers=H(t)).get_json()["webhooks"][0]
    code = make_code(client, t, lock_id)
    client.delete(f"/api/v1/codes/{code['id']}", headers=H(t))
    assert deliver(app)["sent"] == 2
    got = webhook_receiver.received()
    assert [json.loads(r["body"])["type"] for r in got] == ["code.created", "code.revoked"]
    for r in got:
        body, headers = r["body"], r["headers"]
        assert webhooks.verify(secret, headers["keydrop-signature"], body)  # what a receiver checks
        assert not webhooks.verify(secret, headers["keydrop-signature"], body.replace(b"code", b"kode"))
        assert not webhooks.verify("00" * 32, headers["keydrop-signature"], body)
        ts = int(headers["keydrop-signature"].split(",")[0][2:])
        assert not webhooks.verify(secret, headers["keydrop-signature"], body, now=ts + 301)  # replay window
        event = json.loads(body)
        assert headers["keydrop-event-id"] == event["id"] and event["data"]["code_id"] == code["id"]
        assert code["code"] not in body.decode() and "code" not in event["data"]  # never the digits
    # nothing else was sent (lock events etc. are not subscribed); delivery log says sent
    assert deliver(app)["sent"] == 0
    log = client.get(f"/api/v1/webhooks/{ep['id']}/deliveries", headers=H(t)).get_json()["deliveries"]
    assert [d["status"] for d in log] == ["sent", "sent"]


def test_retries_after_the_receiver_was_down_keep_the_event_id(app, client, api_token, make_agency, make_lock,
                                                                webhook_receiver):
    ag = make_agency()
    t = api_token(ag)
    lock_id = make_lock(ag)
    client.post("/api/v1/webhooks", headers=H(t), json={"url": webhook_receiver.url})
    webhook_receiver.status = 503
    make_code(client, t, lock_id)
    now = datetime.now(UTC).replace(microsecond=0)
    assert deliver(app, now)["retry"] == 1
    assert deliver(app, now + timedelta(seconds=10))["retry"] == 0   # backoff: not due yet (30 s)
    assert deliver(app, now + timedelta(seconds=31))["retry"] == 1   # second failure: next in 60 s
    with app.app_context():
        row = db.session.scalar(sa.select(WebhookDelivery))
        assert row.attempts == 2 and row.last_status == 503 and row.next_attempt_at == now + timedelta(seconds=91)
    webhook_receiver.status = 200
    assert deliver(app, now + timedelta(seconds=91))["sent"] == 1
    got = webhook_receiver.received()
    assert len(got) == 3 and len({r["headers"]["keydrop-event-id"] for r in got}) == 1
    assert deliver(app, now + timedelta(hours=2))["sent"] == 0  # delivered once, not again
    # the receiver's server stops altogether: a network error is retried too
    webhook_receiver.stop()
    make_code(client, t, lock_id)
    assert deliver(app, now + timedelta(hours=3))["retry"] == 1


def test_lock_and_access_events(app, client, api_token, make_agency, make_lock, webhook_receiver):
    from cloud import domain
    from cloud.models import Lock
    ag = make_agency()
    t = api_token(ag)
    lock_id = make_lock(ag)
    client.post("/api/v1/webhooks", headers=H(t), json={"url": webhook_receiver.url,
                                                        "events": ["access.opened", "code.on_lock", "alert.*"]})
    code = make_code(client, t, lock_id)
    with app.app_context():
        lock = db.session.get(Lock, lock_id)
        domain.codeset_acknowledged(lock, lock.desired_revision)
        domain.record_events(lock, [{"seq": 1, "t": None, "kind": "opened", "code_id": code["id"]},
                                    {"seq": 2, "t": None, "kind": "opened_backup"}])
    deliver(app)
    events = [json.loads(r["body"]) for r in webhook_receiver.received()]
    assert sorted(e["type"] for e in events) == ["access.opened", "access.opened", "alert.backup_used", "code.on_lock"]
    opened = [e["data"] for e in events if e["type"] == "access.opened"]
    assert opened[0]["code_id"] == code["id"] and opened[0]["backup_key"] is False
    assert opened[1]["code_id"] is None and opened[1]["backup_key"] is True
    assert all(code["code"] not in json.dumps(e) for e in events)


def test_webhook_management_rules(app, client, api_token, make_agency, login):
    ag = make_agency()
    t = api_token(ag)
    for bad in [{"url": "ftp://example.com/"}, {"url": ""}, {"url": "https://example.com/", "events": ["nope"]},
                {"url": "https://example.com/", "events": "code.created"}]:
        assert client.post("/api/v1/webhooks", headers=H(t), json=bad).status_code == 400, bad
    # (staff may not manage webhooks: test_alerts.py::test_staff_cannot_change_alerts_or_webhooks)
    # the page: add (secret shown once), log, remove; another agency cannot see or remove it
    login(client, ag)
    page = client.post("/settings/webhooks", data={"url": "http://127.0.0.1:9/hook", "events": ["alert.*"]})
    assert page.status_code == 201 and "shown only now" in page.get_data(as_text=True)
    assert "shown only now" not in client.get("/settings/webhooks").get_data(as_text=True)
    ep_id = client.get("/api/v1/webhooks", headers=H(t)).get_json()["webhooks"][0]["id"]
    other = api_token()
    assert client.delete(f"/api/v1/webhooks/{ep_id}", headers=H(other)).status_code == 404
    assert client.post(f"/settings/webhooks/{ep_id}/delete").status_code == 302
    assert client.get("/api/v1/webhooks", headers=H(t)).get_json()["webhooks"] == []


def test_webhook_urls_go_through_the_ssrf_guard(app, client, api_token, make_agency):
    app.config["CALENDAR_ALLOW_PRIVATE_HOSTS"] = False
    t = api_token(make_agency())
    for url in ["http://127.0.0.1:8080/hook", "http://169.254.169.254/", "http://[::1]/", "http://10.1.2.3/"]:
        resp = client.post("/api/v1/webhooks", headers=H(t), json={"url": url})
        assert resp.status_code == 400 and "not allowed" in resp.get_json()["message"], url


def test_a_receiver_that_swallows_connections_does_not_hold_up_the_mail(app, make_agency, make_lock, smtp_server):
    """Mail and webhooks share the outbox worker: 30 deliveries queued for a receiver that accepts connections and
    never answers cost one timeout per pass, not one per row, so a mail queued meanwhile goes out within about
    one timeout; the rows not tried are moved to the failed row's next attempt without counting an attempt."""
    import threading
    import time

    from cloud import events, mailer
    from cloud.models import User
    from tests.httpfixtures import Blackhole
    timeout = 2.0
    app.config.update(WEBHOOK_TIMEOUT_S=timeout)
    hole = Blackhole().start()
    ag = make_agency()
    with app.app_context():
        user = db.session.get(User, ag.owner_id)
        ep_id = webhooks.create_endpoint(user, url=hole.url, events=["*"]).id
        for i in range(30):
            events.emit(ag.id, "lock.online", {"lock_id": f"l{i}", "at": None})
        db.session.commit()
    stop = threading.Event()

    def worker():
        with app.app_context():
            mailer.run_forever(0.05, stop=stop.is_set)
    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not hole.accepted and time.monotonic() < deadline:
            time.sleep(0.02)
        assert hole.accepted, "the worker never tried the receiver"
        with app.app_context():
            mailer.enqueue("someone@example.com", "reset", "Reset", user=type("U", (), {"email": "x@example.com"}),
                           link="http://l", minutes=60)
            db.session.commit()
        queued = time.monotonic()
        while not smtp_server.to("someone@example.com") and time.monotonic() - queued < timeout + 1.5:
            time.sleep(0.02)
        waited = time.monotonic() - queued
        assert smtp_server.to("someone@example.com"), f"the mail still waits after {waited:.1f} s"
    finally:
        stop.set()
        thread.join(120)
        hole.stop()
    assert len(hole.accepted) <= 2  # one connection per pass, not one per row
    with app.app_context():
        rows = db.session.scalars(sa.select(WebhookDelivery).where(WebhookDelivery.endpoint_id == ep_id)).all()
        tried = [r for r in rows if r.attempts]
        assert len(tried) == 1 and tried[0].status == "pending"
        assert all(r.status == "pending" and r.next_attempt_at >= tried[0].next_attempt_at for r in rows)


def test_a_pass_stops_after_its_time_budget(app, make_agency, webhook_receiver):
    """Slow but answering receivers: the pass stops after WEBHOOK_PASS_BUDGET_S; the rest stays due."""
    import time

    from cloud import events
    from cloud.models import User
    app.config.update(WEBHOOK_PASS_BUDGET_S=0.5)
    ag = make_agency()
    with app.app_context():
        webhooks.create_endpoint(db.session.get(User, ag.owner_id), url=webhook_receiver.url, events=["*"])
        for i in range(20):
            events.emit(ag.id, "lock.online", {"lock_id": f"l{i}", "at": None})
        db.session.commit()
    webhook_receiver.delay_s = 0.2
    t0 = time.monotonic()
    first = deliver(app)
    assert time.monotonic() - t0 < 1.5 and 1 <= first["sent"] < 20
    webhook_receiver.delay_s = 0
    assert deliver(app)["sent"] == 20 - first["sent"]


def test_mailer_once_delivers_the_webhooks_too(app, make_agency, webhook_receiver):
    from cloud import events
    from cloud.models import User
    ag = make_agency()
    with app.app_context():
        webhooks.create_endpoint(db.session.get(User, ag.owner_id), url=webhook_receiver.url, events=["*"])
        events.emit(ag.id, "lock.online", {"lock_id": "x", "at": None})
        db.session.commit()
    result = app.test_cli_runner().invoke(args=["mailer", "--once"])
    assert result.exit_code == 0 and "webhooks sent=1" in result.output
    assert len(webhook_receiver.received()) == 1


def test_decommissioning_a_lock_sends_code_revoked_for_each_live_code(app, client, api_token, make_agency,
                                                                      make_lock, login, webhook_receiver):
    ag = make_agency()
    t = api_token(ag)
    lock_id = make_lock(ag)
    assert client.post("/api/v1/webhooks", headers=H(t), json={"url": webhook_receiver.url,
                                                               "events": ["code.revoked"]}).status_code == 201
    first, second, gone = (make_code(client, t, lock_id) for _ in range(3))
    client.delete(f"/api/v1/codes/{gone['id']}", headers=H(t))  # already revoked: not again
    assert deliver(app)["sent"] == 1
    web = login(app.test_client(), ag)
    assert web.post(f"/locks/{lock_id}/decommission").status_code == 302
    assert deliver(app)["sent"] == 2
    events = [json.loads(r["body"]) for r in webhook_receiver.received()[1:]]
    assert sorted(e["data"]["code_id"] for e in events) == [first["id"], second["id"]]
    for e in events:
        assert e["type"] == "code.revoked" and e["data"]["lock_id"] == lock_id and e["data"]["revoked_at"]
        got = client.get(f"/api/v1/codes/{e['data']['code_id']}", headers=H(t)).get_json()
        assert got["status"] == "revoked" and got["revoked_at"] == e["data"]["revoked_at"]


def test_a_2xx_with_a_long_body_is_delivered(app, make_agency, webhook_receiver):
    """Only the status counts: a receiver answering 200 with a page over 64 KiB has received the event."""
    from cloud import events
    from cloud.models import User
    ag = make_agency()
    with app.app_context():
        webhooks.create_endpoint(db.session.get(User, ag.owner_id), url=webhook_receiver.url, events=["*"])
        events.emit(ag.id, "lock.online", {"lock_id": "x", "at": None})
        db.session.commit()
    webhook_receiver.answer = b"<html>" + b"x" * (100 * 1024) + b"</html>"
    assert deliver(app)["sent"] == 1
    assert deliver(app, datetime.now(UTC) + timedelta(hours=1))["sent"] == 0


def test_lock_online_offline_and_alert_deliveries(app, client, api_token, make_agency, make_lock, webhook_receiver):
    """The automation worker's first look at locks announces none whose state is old (a deploy does not send
    lock.online for every lock), a lock that just came online is announced; then offline, the offline alert,
    back online and its alert reach the receiver."""
    from cloud import automation
    ag = make_agency()
    t = api_token(ag)
    old_lock, new_lock = make_lock(ag), make_lock(ag, name="Flat 4C")
    client.post("/api/v1/webhooks", headers=H(t), json={"url": webhook_receiver.url,
                                                        "events": ["lock.online", "lock.offline", "alert.*"]})
    t0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    with app.app_context():
        set_connection(old_lock, True, t0 - timedelta(days=3))
        set_connection(new_lock, True, t0 - timedelta(seconds=20))
        assert automation.tick(t0)["connection_changes"] == 1
    deliver(app)
    got = [json.loads(r["body"]) for r in webhook_receiver.received()]
    assert [(e["type"], e["data"]["lock_id"]) for e in got] == [("lock.online", new_lock)]
    with app.app_context():
        set_connection(old_lock, False, t0 + timedelta(minutes=1))
        automation.tick(t0 + timedelta(minutes=2))
        automation.tick(t0 + timedelta(minutes=32))
        set_connection(old_lock, True, t0 + timedelta(minutes=40))
        automation.tick(t0 + timedelta(minutes=41))
    deliver(app)
    got = [json.loads(r["body"]) for r in webhook_receiver.received()[1:]]
    assert [e["type"] for e in got] == ["lock.offline", "alert.offline", "lock.online", "alert.online"]
    assert all(e["data"]["lock_id"] == old_lock for e in got)
    assert got[0]["data"]["at"] == "2030-01-01T12:01:00Z" and got[1]["data"]["lock_name"] == "Flat 3B"


def test_signature_recomputed_as_documented(app, client, api_token, make_agency, make_lock, webhook_receiver):
    """A receiver following docs/automation.md alone: HMAC-SHA256, key bytes.fromhex(secret), message
    "<t>." + raw body, header "t=<t>,v1=<hex>"."""
    import hashlib
    import hmac
    import time
    ag = make_agency()
    t = api_token(ag)
    lock_id = make_lock(ag)
    secret = client.post("/api/v1/webhooks", headers=H(t), json={"url": webhook_receiver.url}).get_json()["secret"]
    make_code(client, t, lock_id)
    deliver(app)
    (r,) = webhook_receiver.received()
    header = r["headers"]["keydrop-signature"]
    fields = dict(part.split("=", 1) for part in header.split(","))
    assert set(fields) == {"t", "v1"} and abs(int(fields["t"]) - time.time()) < 60
    expected = hmac.new(bytes.fromhex(secret), fields["t"].encode() + b"." + r["body"], hashlib.sha256).hexdigest()
    assert hmac.compare_digest(expected, fields["v1"])
    assert r["headers"]["content-type"] == "application/json"
    assert r["headers"]["keydrop-event-type"] == "code.created" == json.loads(r["body"])["type"]


def test_the_webhooks_page_shows_the_delivery_log(app, client, api_token, make_agency, make_lock, login,
                                                   webhook_receiver):
    ag = make_agency()
    t = api_token(ag)
    lock_id = make_lock(ag)
    client.post("/api/v1/webhooks", headers=H(t), json={"url": webhook_receiver.url})
    code = make_code(client, t, lock_id)
    deliver(app)
    webhook_receiver.status = 503
    client.delete(f"/api/v1/codes/{code['id']}", headers=H(t))
    deliver(app)
    login(client, ag)
    page = client.get("/settings/webhooks").get_data(as_text=True)
    log = page[page.index('id="deliveries"'):]
    assert "code.created" in log and "code.revoked" in log
    assert "sent" in log and "pending" in log and "HTTP 503" in log
    with app.app_context():
        ids = db.session.scalars(sa.select(WebhookDelivery.event_id)).all()
    assert all(i in log for i in ids)
