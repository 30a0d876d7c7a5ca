"""Alerts: each kind emails the owner exactly once per episode (with a link to the lock page); the agency's
settings turn kinds off; readiness checks 24 h and 2 h before arrivals; GET /api/v1/arrivals."""
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from cloud import automation, domain
from cloud.extensions import db
from cloud.models import Agency, Alert, Code, Lock, OutboxMail, User
from tests.conftest import set_connection

UTC = timezone.utc


def H(token):
    return {"Authorization": f"Bearer {token}"}


def _lock(lock_id):
    return db.session.get(Lock, lock_id)


def alert_mails(subject_part=""):
    rows = db.session.scalars(sa.select(OutboxMail).where(OutboxMail.kind == "alert").order_by(OutboxMail.id)).all()
    return [m for m in rows if subject_part in m.subject]


def test_lockout_steps_are_one_episode_one_mail(app, make_agency, make_lock):
    ag = make_agency()
    lock_id = make_lock(ag)
    with app.app_context():
        steps = [{"seq": i, "t": None, "kind": "lockout", "seconds": 30 * 2 ** (i - 1)} for i in range(1, 5)]
        domain.record_events(_lock(lock_id), steps[:2])
        domain.record_events(_lock(lock_id), steps[2:])  # 4 steps, in two uplinks
        mails = alert_mails("locked out")
        assert len(mails) == 1 and mails[0].recipient == ag.email
        assert f"/locks/{lock_id}" in mails[0].text_body and f"/locks/{lock_id}" in mails[0].html_body
        # a successful opening ends the episode; the next lockout is a new one
        domain.record_events(_lock(lock_id), [{"seq": 5, "t": None, "kind": "opened", "code_id": 1}])
        domain.record_events(_lock(lock_id), [{"seq": 6, "t": None, "kind": "lockout", "seconds": 30}])
        assert len(alert_mails("locked out")) == 2


def test_backup_key_use_mails_at_once_once_until_replaced(app, make_agency, make_lock):
    ag = make_agency()
    lock_id = make_lock(ag)
    with app.app_context():
        domain.record_events(_lock(lock_id), [{"seq": 1, "t": 1900000000, "kind": "opened_backup"}])
        assert len(alert_mails("backup key was used")) == 1
        domain.record_events(_lock(lock_id), [{"seq": 2, "t": 1900000100, "kind": "opened_backup"}])
        assert len(alert_mails("backup key was used")) == 1
        domain.rotate_backup(_lock(lock_id), first_used_at=1900000000)
        domain.codeset_acknowledged(_lock(lock_id), _lock(lock_id).desired_revision)
        domain.record_events(_lock(lock_id), [{"seq": 3, "t": 1900100000, "kind": "opened_backup"}])
        assert len(alert_mails("backup key was used")) == 2


def test_clock_off_mails_once_per_episode(app, make_agency, make_lock):
    ag = make_agency()
    lock_id = make_lock(ag)
    now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    t = int(now.timestamp())
    with app.app_context():
        hello = dict(firmware="1", boot_count=1, revision=0)
        domain.lock_hello(_lock(lock_id), lock_time=t + 100, now=now, **hello)  # within 2 min
        assert alert_mails("clock") == []
        domain.lock_hello(_lock(lock_id), lock_time=t + 300, now=now, **hello)
        domain.lock_hello(_lock(lock_id), lock_time=t + 310, now=now, **hello)
        domain.lock_hello(_lock(lock_id), lock_time=None, now=now, **hello)  # no trusted time yet: not judged
        assert len(alert_mails("clock off by 300 s")) == 1
        domain.lock_hello(_lock(lock_id), lock_time=t - 5, now=now, **hello)   # fixed
        domain.lock_hello(_lock(lock_id), lock_time=t - 200, now=now, **hello)  # off again: a new episode
        assert len(alert_mails("clock off")) == 2 and "behind" in alert_mails("clock off")[1].text_body


def test_the_lock_setting_its_clock_from_the_cloud_ends_the_skew(app, make_agency, make_lock):
    """The hello measures the skew before the lock corrects its clock from the cloud's reply; the lock's
    "clock set (server)" entry then ends it: skew 0, episode closed, the stay's clock check ready again."""
    from cloud import readiness
    ag = make_agency()
    lock_id = make_lock(ag)
    now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    t = int(now.timestamp())
    code_id = _stay(app, lock_id, ag.owner_id, now + timedelta(days=1))
    with app.app_context():
        hello = dict(firmware="1", boot_count=1, revision=0)
        domain.lock_hello(_lock(lock_id), lock_time=t + 600, now=now, **hello)
        assert len(alert_mails("clock off by 600 s")) == 1
        assert not readiness.check(db.session.get(Code, code_id), _lock(lock_id), now, False).clock_ok
        # an entry from before this hello (uploaded late) says nothing about the skew measured since
        domain.record_events(_lock(lock_id), [{"seq": 1, "t": t - 3600, "kind": "time_set", "source": "server"}])
        assert _lock(lock_id).clock_skew_s == 600
        domain.record_events(_lock(lock_id), [{"seq": 2, "t": t + 1, "kind": "time_set", "source": "server"}])
        lock = _lock(lock_id)
        assert lock.clock_skew_s == 0
        assert readiness.check(db.session.get(Code, code_id), lock, now, False).clock_ok
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Alert).where(
            Alert.kind == "clock", Alert.closed_at.is_(None))) == 0
        # off again at a later hello: a new episode, a new mail
        domain.lock_hello(_lock(lock_id), lock_time=t + 3900, now=now + timedelta(hours=1), **hello)
        assert len(alert_mails("clock off by 300 s")) == 1


def test_readiness_clock_limit_is_alert_clock_skew_s(app, make_agency, make_lock):
    from cloud import readiness
    app.config["ALERT_CLOCK_SKEW_S"] = 400
    ag = make_agency()
    lock_id = make_lock(ag)
    now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    code_id = _stay(app, lock_id, ag.owner_id, now + timedelta(days=1))
    with app.app_context():
        domain.lock_hello(_lock(lock_id), lock_time=int(now.timestamp()) + 300, now=now, firmware="1",
                          boot_count=1, revision=0)
        assert alert_mails("clock") == []
        r = readiness.check(db.session.get(Code, code_id), _lock(lock_id), now, False)
        assert r.clock_ok and not any("clock" in p for p in r.problems)


def test_offline_for_long_then_back_online(app, make_agency, make_lock):
    ag = make_agency()
    lock_id = make_lock(ag)
    t0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    with app.app_context():
        set_connection(lock_id, True, t0)
        automation.tick(t0)
        set_connection(lock_id, False, t0 + timedelta(minutes=1))
        automation.tick(t0 + timedelta(minutes=20))
        assert alert_mails("offline") == []           # not yet ALERT_OFFLINE_AFTER_S (1800 s)
        automation.tick(t0 + timedelta(minutes=32))
        automation.tick(t0 + timedelta(minutes=40))
        assert len(alert_mails("offline since")) == 1
        set_connection(lock_id, True, t0 + timedelta(minutes=45))
        automation.tick(t0 + timedelta(minutes=46))
        automation.tick(t0 + timedelta(minutes=47))
        back = alert_mails("back online")
        assert len(back) == 1 and f"/locks/{lock_id}" in back[0].text_body
        assert "back online since 2030-01-01 13:45" in back[0].text_body  # Europe/Paris, UTC+1 in January
        assert "offline since 2030-01-01 13:01" in back[0].text_body
        # a short drop (under 30 min) mails nothing
        set_connection(lock_id, False, t0 + timedelta(minutes=50))
        automation.tick(t0 + timedelta(minutes=55))
        set_connection(lock_id, True, t0 + timedelta(minutes=58))
        automation.tick(t0 + timedelta(minutes=59))
        assert len(alert_mails("offline")) == 1 and len(alert_mails("back online")) == 1


def _stay(app, lock_id, owner_id, start):
    with app.app_context():
        code = domain.generate_code(_lock(lock_id), valid_from=start, valid_until=start + timedelta(days=3),
                                    by=db.session.get(User, owner_id), customer_name="Noor",
                                    now=start - timedelta(days=2))
        return code.id


def test_a_stay_not_ready_mails_once_at_24h_and_once_at_2h(app, make_agency, make_lock):
    ag = make_agency()
    lock_id = make_lock(ag)
    arrival = datetime(2030, 3, 10, 14, 0, tzinfo=UTC)
    _stay(app, lock_id, ag.owner_id, arrival)
    with app.app_context():
        automation.tick(arrival - timedelta(hours=30))
        assert alert_mails("not ready") == []
        for h in (23.9, 23, 12):
            automation.tick(arrival - timedelta(hours=h))
        mails = alert_mails("not ready")
        assert len(mails) == 1 and "arrival in 24 h" in mails[0].subject
        assert "not on the lock" in mails[0].text_body and "backup key" in mails[0].text_body
        for h in (1.9, 1, 0.1):
            automation.tick(arrival - timedelta(hours=h))
        assert [m.subject.split(": ")[1] for m in alert_mails("not ready")] == ["arrival in 24 h not ready",
                                                                                "arrival in 2 h not ready"]


def test_a_ready_stay_mails_nothing_and_settings_turn_kinds_off(app, make_agency, make_lock, client, api_token):
    ag = make_agency()
    lock_id = make_lock(ag)
    arrival = datetime(2030, 3, 10, 14, 0, tzinfo=UTC)
    code_id = _stay(app, lock_id, ag.owner_id, arrival)
    with app.app_context():
        lock = _lock(lock_id)
        lock.clock_skew_s = 3
        db.session.get(Code, code_id).on_lock_at = arrival - timedelta(days=2)
        db.session.commit()
        set_connection(lock_id, True, arrival - timedelta(days=2))
        automation.tick(arrival - timedelta(hours=20))
        assert alert_mails("not ready") == []
    # the owner turns the lockout alert off (API); lockouts then mail nothing
    t = api_token(ag)
    resp = client.put("/api/v1/alert-settings", headers=H(t), json={"on": ["offline", "backup_used"]})
    assert resp.status_code == 200 and "lockout" not in resp.get_json()["on"]
    assert client.put("/api/v1/alert-settings", headers=H(t), json={"on": ["bogus"]}).status_code == 400
    with app.app_context():
        domain.record_events(_lock(lock_id), [{"seq": 1, "t": None, "kind": "lockout", "seconds": 30}])
        assert alert_mails("locked out") == []
        assert db.session.get(Agency, ag.id).alerts_off == ["clock", "lockout", "not_ready"]


def test_arrivals_api_and_page(app, make_agency, make_lock, client, api_token, login):
    ag = make_agency()
    lock_id = make_lock(ag)
    now = datetime.now(UTC).replace(microsecond=0)
    soon = _stay(app, lock_id, ag.owner_id, now + timedelta(days=2))
    _stay(app, lock_id, ag.owner_id, now + timedelta(days=9))  # beyond 7 days
    other = make_agency()
    _stay(app, make_lock(other), other.owner_id, now + timedelta(days=1))  # another agency's
    body = client.get("/api/v1/arrivals", headers=H(api_token(ag))).get_json()
    assert [a["code_id"] for a in body["arrivals"]] == [soon]
    a = body["arrivals"][0]
    assert a["ready"] is False and a["checks"]["code_on_lock"] is False and a["checks"]["clock_ok"] is False
    assert a["checks"]["backup_rotation_pending"] is False and a["advice"]
    login(client, ag)
    page = client.get("/arrivals").get_data(as_text=True)
    assert "not ready" in page and "Noor" in page and "backup key" in page


@pytest.fixture
def staff_client(app, make_agency, client):
    """A staff member of a fresh agency, logged in (roles: staff cannot manage alerts nor webhooks)."""
    ag = make_agency()
    with app.app_context():
        u = User(agency_id=ag.id, email="staffer@example.com", role="staff", name="S")
        u.set_password("correct horse battery staple")
        db.session.add(u)
        db.session.commit()
    resp = client.post("/login", data={"email": "staffer@example.com", "password": "correct horse battery staple"})
    assert resp.status_code == 302
    return client


def test_staff_cannot_change_alerts_or_webhooks(staff_client):
    assert staff_client.get("/settings/alerts").status_code == 403
    assert staff_client.get("/settings/webhooks").status_code == 403
    assert staff_client.get("/arrivals").status_code == 200


def test_a_late_check_says_the_real_time_left(app, make_agency, make_lock):
    """A worker that was stopped at the 24 h checkpoint checks the stay 20 h before: the subject says 20 h."""
    ag = make_agency()
    lock_id = make_lock(ag)
    arrival = datetime(2030, 3, 10, 14, 0, tzinfo=UTC)
    _stay(app, lock_id, ag.owner_id, arrival)
    with app.app_context():
        automation.tick(arrival - timedelta(hours=20, minutes=10))
        automation.tick(arrival - timedelta(minutes=40))
        assert [m.subject.split(": ")[1] for m in alert_mails("not ready")] == ["arrival in 20 h not ready",
                                                                                "arrival in 40 min not ready"]


def test_readiness_hours_of_one_checkpoint(app, make_agency, make_lock):
    app.config["READINESS_HOURS"] = "6"
    ag = make_agency()
    lock_id = make_lock(ag)
    arrival = datetime(2030, 3, 10, 14, 0, tzinfo=UTC)
    _stay(app, lock_id, ag.owner_id, arrival)
    with app.app_context():
        for h in (30, 23, 7, 5.9, 3, 1, 0.2):
            automation.tick(arrival - timedelta(hours=h))
        assert [m.subject.split(": ")[1] for m in alert_mails("not ready")] == ["arrival in 6 h not ready"]


def test_readiness_with_a_pending_rotation_and_a_lock_seen_31_minutes_ago(app, make_agency, make_lock):
    from cloud import readiness
    ag = make_agency()
    lock_id = make_lock(ag)
    now = datetime(2030, 3, 9, 14, 0, tzinfo=UTC)
    code_id = _stay(app, lock_id, ag.owner_id, now + timedelta(hours=24))
    with app.app_context():
        lock = _lock(lock_id)
        lock.clock_skew_s, lock.last_seen_at = 0, now - timedelta(minutes=29)
        db.session.get(Code, code_id).on_lock_at = now - timedelta(hours=1)
        db.session.commit()
        code = db.session.get(Code, code_id)
        assert readiness.check(code, _lock(lock_id), now, False).ready
        r = readiness.check(code, _lock(lock_id), now, True)
        assert not r.ready and r.rotation_pending and any("backup-key replacement" in p for p in r.problems)
        _lock(lock_id).last_seen_at = now - timedelta(minutes=31)
        db.session.commit()
        r = readiness.check(db.session.get(Code, code_id), _lock(lock_id), now, False)
        assert not r.seen_recently and any("not been seen for more than 30 minutes" in p for p in r.problems)
        # the worker finds the pending rotation itself
        _lock(lock_id).last_seen_at = now
        db.session.commit()
        domain.rotate_backup(_lock(lock_id), first_used_at=None, now=now)
        automation.tick(now)
        (mail,) = alert_mails("not ready")
        assert "backup-key replacement" in mail.text_body


def test_alert_settings_page(app, make_agency, client, login):
    ag = make_agency()
    login(client, ag)
    page = client.get("/settings/alerts")
    assert page.status_code == 200 and "backup key was used" in page.get_data(as_text=True)
    resp = client.post("/settings/alerts", data={"offline": "on", "clock": "on"})
    assert resp.status_code == 302
    with app.app_context():
        assert db.session.get(Agency, ag.id).alerts_off == ["backup_used", "lockout", "not_ready"]
    page = client.get("/settings/alerts").get_data(as_text=True)
    assert "Alert settings saved." in page


def test_config_defaults(monkeypatch):
    from cloud.config import from_environment
    keys = ["CALENDAR_POLL_S", "CALENDAR_TIMEOUT_S", "CALENDAR_MAX_BYTES", "ALERT_OFFLINE_AFTER_S",
            "ALERT_CLOCK_SKEW_S", "READINESS_HOURS", "WEBHOOK_TIMEOUT_S", "WEBHOOK_PASS_BUDGET_S"]
    for key in keys:
        monkeypatch.delenv(key, raising=False)
    cfg = from_environment()
    assert [cfg[k] for k in keys] == [900, 10, 1024 * 1024, 1800, 120, "24,2", 10, 20]
