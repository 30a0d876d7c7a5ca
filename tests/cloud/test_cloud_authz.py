"""Agency scoping: agency A tries every route that takes an id with agency B's lock and code ids → 404,
and nothing of B's changes."""
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa

from cloud import domain
from cloud.extensions import db
from cloud.models import AuditEvent, Code, Lock, OutboxMail, User

UTC = timezone.utc


def _victim(app, make_agency, make_lock):
    b = make_agency(name="Victim Agency")
    lock_b = make_lock(b)
    with app.app_context():
        now = datetime.now(UTC)
        code = domain.generate_code(db.session.get(Lock, lock_b), valid_from=now, valid_until=now + timedelta(days=2),
                                    by=db.session.get(User, b.owner_id), customer_name="Secret Customer")
        return b, lock_b, code.id


def _id_routes(app):
    """Every (rule, methods) of the app that takes a lock or code id."""
    for rule in app.url_map.iter_rules():
        if {"lock_id", "code_id"} & set(rule.arguments):
            yield rule, sorted(rule.methods - {"HEAD", "OPTIONS"})


def _url(rule, lock_id, code_id):
    url = rule.rule.replace("<lock_id>", lock_id).replace("<int:code_id>", str(code_id))
    assert "<" not in url, rule.rule
    return url


def _snapshot(app, lock_b, code_b):
    with app.app_context():
        lock = db.session.get(Lock, lock_b)
        code = db.session.get(Code, code_b)
        return (lock.desired_revision, lock.agency_id, code.revoked_at,
                db.session.scalar(sa.select(sa.func.count(AuditEvent.id))),
                db.session.scalar(sa.select(sa.func.count(OutboxMail.id))),
                db.session.scalar(sa.select(sa.func.count(Code.id))))


def test_every_web_route_hides_other_agencies(app, client, make_agency, make_lock, login):
    b, lock_b, code_b = _victim(app, make_agency, make_lock)
    a = make_agency(name="Curious Agency")
    make_lock(a)
    login(client, a)
    before = _snapshot(app, lock_b, code_b)
    tried = 0
    for rule, methods in _id_routes(app):
        if rule.rule.startswith("/api/"):
            continue
        for method in methods:
            data = {"check_in": "2031-01-01T10:00", "check_out": "2031-01-02T10:00"}
            resp = client.open(_url(rule, lock_b, code_b), method=method, data=data)
            assert resp.status_code == 404, (method, rule.rule, resp.status_code)
            assert b"Secret Customer" not in resp.data and b"Victim" not in resp.data
            tried += 1
    assert tried >= 5
    assert _snapshot(app, lock_b, code_b) == before
    # listings and filters don't leak either
    for url in ["/locks/", "/codes/", f"/codes/?lock={lock_b}", "/codes/export.csv", f"/codes/export.csv?lock={lock_b}"]:
        resp = client.get(url)
        assert resp.status_code == 200 and b"Secret Customer" not in resp.data
        assert b"data-code=" not in resp.data and b"Victim" not in resp.data
        if lock_b not in url:  # a filter echoes the caller's own input; otherwise B's id must not appear
            assert lock_b.encode() not in resp.data


def test_every_api_route_hides_other_agencies(app, client, make_agency, make_lock, api_token):
    b, lock_b, code_b = _victim(app, make_agency, make_lock)
    a = make_agency(name="Curious Agency")
    t = api_token(a)
    before = _snapshot(app, lock_b, code_b)
    tried = 0
    now = datetime.now(UTC)
    body = {"valid_from": now.isoformat(), "valid_until": (now + timedelta(days=1)).isoformat()}
    for rule, methods in _id_routes(app):
        if not rule.rule.startswith("/api/"):
            continue
        for method in methods:
            resp = client.open(_url(rule, lock_b, code_b), method=method, json=body,
                               headers={"Authorization": f"Bearer {t}"})
            assert resp.status_code == 404, (method, rule.rule, resp.status_code)
            assert resp.get_json() == {"message": "Not found."}
            tried += 1
    assert tried >= 5
    assert _snapshot(app, lock_b, code_b) == before
    assert client.get("/api/v1/locks", headers={"Authorization": f"Bearer {t}"}).get_json()["locks"] == []
    assert client.get(f"/api/v1/codes?lock_id={lock_b}",
                      headers={"Authorization": f"Bearer {t}"}).get_json()["codes"] == []
