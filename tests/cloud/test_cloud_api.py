"""JSON API /api/v1."""
import hashlib
import hmac
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa

from cloud.extensions import db
from cloud.models import AuditEvent, Lock, OutboxMail

UTC = timezone.utc


def H(token):
    return {"Authorization": f"Bearer {token}"}


def test_token_endpoint(client, make_agency):
    ag = make_agency()
    resp = client.post("/api/v1/tokens", auth=(ag.email, ag.password))
    assert resp.status_code == 201 and resp.get_json()["token"].startswith("kd_")
    resp = client.post("/api/v1/tokens", auth=(ag.email, "wrong"))
    assert resp.status_code == 401 and "message" in resp.get_json()
    assert client.post("/api/v1/tokens").status_code == 401
    assert client.get("/api/v1/locks").status_code == 401
    assert client.get("/api/v1/locks", headers=H("kd_forged")).status_code == 401


def test_register_and_list_locks(client, api_token):
    t = api_token()
    resp = client.post("/api/v1/locks", headers=H(t), json={"mac": "24:A1:60:54:AB:3C", "name": "Loft",
                                                             "address": "1 Main St", "timezone": "Europe/Rome"})
    assert resp.status_code == 201
    body = resp.get_json()
    assert body["id"] == "24a16054ab3c" and body["status"] == "registered" and "secret" not in body
    assert resp.headers["Location"] == "/api/v1/locks/24a16054ab3c"
    assert [lk["id"] for lk in client.get("/api/v1/locks", headers=H(t)).get_json()["locks"]] == ["24a16054ab3c"]
    assert client.get("/api/v1/locks/24A16054AB3C", headers=H(t)).get_json()["name"] == "Loft"
    # re-running the installer: same agency → 409 with the existing id
    resp = client.post("/api/v1/locks", headers=H(t), json={"mac": "24a16054ab3c", "name": "Loft",
                                                             "address": "1 Main St", "timezone": "Europe/Rome"})
    assert resp.status_code == 409 and resp.get_json()["lock_id"] == "24a16054ab3c"
    # another agency: 409 without details
    resp = client.post("/api/v1/locks", headers=H(api_token()), json={
        "mac": "24-a1-60-54-ab-3c", "name": "X", "address": "Y", "timezone": "Europe/Rome"})
    assert resp.status_code == 409 and "lock_id" not in resp.get_json()
    for bad in [{"mac": "ff:ff:ff:ff:ff:ff"}, {"mac": "123"}, {"timezone": "Nowhere/City"}, {"name": ""}]:
        payload = dict({"mac": "24a16054ab3d", "name": "N", "address": "A", "timezone": "UTC"}, **bad)
        resp = client.post("/api/v1/locks", headers=H(t), json=payload)
        assert resp.status_code == 400 and resp.get_json()["message"], bad
    assert client.post("/api/v1/locks", headers=H(t), data="nope").status_code == 400


def test_provision(app, client, api_token, make_agency, make_lock):
    ag = make_agency()
    lock_id = make_lock(ag, active=False)
    resp = client.post(f"/api/v1/locks/{lock_id}/provision", headers=H(api_token(ag)))
    assert resp.status_code == 200 and resp.headers["Cache-Control"] == "no-store"
    body = resp.get_json()
    with app.app_context():
        lock = db.session.get(Lock, lock_id)
        secret = bytes.fromhex(body["secret"])
        assert secret == lock.secret and len(secret) == 32
        assert body["backup_digest"] == hmac.new(secret, lock.backup_key.encode(), hashlib.sha256).hexdigest()
        assert body["mqtt"] == {"host": "127.0.0.1", "port": 1883, "tls": False, "username": lock_id,
                                "password": hmac.new(secret, b"mqtt-password", hashlib.sha256).hexdigest()[:32]}
        [audit] = db.session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "provision")).all()
        assert audit.lock_id == lock_id and audit.user_id == ag.owner_id


def test_codes_lifecycle(app, client, api_token, make_agency, make_lock):
    ag = make_agency()
    t = api_token(ag)
    active, idle = make_lock(ag), make_lock(ag, active=False)
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    payload = {"valid_from": start.astimezone(timezone(timedelta(hours=2))).isoformat(),
               "valid_until": (start + timedelta(days=2)).isoformat().replace("+00:00", "Z"),
               "customer_name": "Ola", "customer_email": "ola@example.com"}
    resp = client.post(f"/api/v1/locks/{idle}/codes", headers=H(t), json=payload)
    assert resp.status_code == 409 and "not come online" in resp.get_json()["message"]
    resp = client.post(f"/api/v1/locks/{active}/codes", headers=H(t), json=payload)
    assert resp.status_code == 201
    code = resp.get_json()
    assert len(code["code"]) == 4 and code["status"] == "scheduled" and code["on_lock"] == "pending"
    assert code["valid_from"] == start.isoformat().replace("+00:00", "Z")
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count(OutboxMail.id)).where(OutboxMail.kind.like("code_%"))) == 2
    assert client.get(f"/api/v1/codes/{code['id']}", headers=H(t)).get_json() == code
    listed = client.get("/api/v1/codes", headers=H(t)).get_json()["codes"]
    assert [c["id"] for c in listed] == [code["id"]]
    assert client.get(f"/api/v1/codes?lock_id={idle}", headers=H(t)).get_json()["codes"] == []
    assert client.get("/api/v1/codes?status=bogus", headers=H(t)).status_code == 400
    resp = client.delete(f"/api/v1/codes/{code['id']}", headers=H(t))
    assert resp.status_code == 200 and resp.get_json()["status"] == "revoked"
    assert client.delete(f"/api/v1/codes/{code['id']}", headers=H(t)).status_code == 200  # idempotent
    assert client.get("/api/v1/codes?status=revoked", headers=H(t)).get_json()["codes"][0]["id"] == code["id"]


def test_code_history_filters_by_dates_and_guest_and_refuses_an_inverted_period(client, api_token, make_agency,
                                                                                make_lock):
    ag = make_agency()
    t = api_token(ag)
    lock = make_lock(ag)
    day = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    made = {}
    for name, offset in [("Early", 2), ("Late", 10)]:
        resp = client.post(f"/api/v1/locks/{lock}/codes", headers=H(t), json={
            "valid_from": (day + timedelta(days=offset)).isoformat(),
            "valid_until": (day + timedelta(days=offset + 1)).isoformat(), "customer_name": name})
        assert resp.status_code == 201, resp.get_json()
        made[name] = resp.get_json()["id"]

    def ids(query):
        resp = client.get(f"/api/v1/codes?{query}", headers=H(t))
        assert resp.status_code == 200, resp.get_json()
        return [c["id"] for c in resp.get_json()["codes"]]

    d = lambda n: f"{(day + timedelta(days=n)):%Y-%m-%d}"  # noqa: E731
    assert ids(f"since={d(5)}") == [made["Late"]]
    assert ids(f"until={d(5)}") == [made["Early"]]
    assert ids(f"since={d(2)}&until={d(10)}") == [made["Late"], made["Early"]]
    assert ids("customer=lat") == [made["Late"]]
    resp = client.get(f"/api/v1/codes?since={d(10)}&until={d(2)}", headers=H(t))
    assert resp.status_code == 400
    assert resp.get_json()["message"] == f"“since” ({d(10)}) is after “until” ({d(2)}): swap them."
    resp = client.get("/api/v1/codes?since=yesterday", headers=H(t))
    assert resp.status_code == 400 and "not a date (YYYY-MM-DD)" in resp.get_json()["message"]


def test_code_input_errors(client, api_token, make_agency, make_lock):
    ag = make_agency()
    t = api_token(ag)
    lock_id = make_lock(ag)
    now = datetime.now(UTC)
    cases = [
        ({"valid_from": "2031-01-01T10:00:00", "valid_until": "2031-01-02T10:00:00+00:00"}, "offset"),
        ({"valid_from": "tomorrow", "valid_until": "2031-01-02T10:00:00+00:00"}, "ISO 8601"),
        ({"valid_until": "2031-01-02T10:00:00+00:00"}, "required"),
        ({"valid_from": "2031-01-03T10:00:00+00:00", "valid_until": "2031-01-02T10:00:00+00:00"}, "after"),
        ({"valid_from": (now - timedelta(days=2)).isoformat(), "valid_until": (now - timedelta(days=1)).isoformat()},
         "ended"),
        ({"valid_from": now.isoformat(), "valid_until": (now + timedelta(days=400)).isoformat()}, "one year"),
        ({"valid_from": now.isoformat(), "valid_until": (now + timedelta(days=1)).isoformat(),
          "customer_email": "not-an-email"}, "customer_email"),
    ]
    for payload, words in cases:
        resp = client.post(f"/api/v1/locks/{lock_id}/codes", headers=H(t), json=payload)
        assert resp.status_code == 400 and words in resp.get_json()["message"], (payload, resp.get_json())


def test_openapi_document(client):
    doc = client.get("/api/v1/openapi.json").get_json()
    assert doc["openapi"].startswith("3.")
    for path in ["/tokens", "/locks", "/locks/{lock_id}", "/locks/{lock_id}/codes", "/locks/{lock_id}/provision",
                 "/codes", "/codes/{code_id}"]:
        assert path in doc["paths"], path
    assert "delete" in doc["paths"]["/codes/{code_id}"]


def test_errors_are_json(client, api_token):
    t = api_token()
    resp = client.get("/api/v1/nope", headers=H(t))
    assert resp.status_code == 404 and resp.get_json()["message"]
    resp = client.put("/api/v1/locks", headers=H(t))
    assert resp.status_code == 405 and resp.get_json()["message"]


def test_patch_lock_checkin_checkout_times(app, client, api_token, make_agency, make_lock):
    ag = make_agency()
    t = api_token(ag)
    lock_id = make_lock(ag)
    body = client.get(f"/api/v1/locks/{lock_id}", headers=H(t)).get_json()
    assert (body["checkin_time"], body["checkout_time"]) == ("15:00", "11:00")
    resp = client.patch(f"/api/v1/locks/{lock_id}", headers=H(t),
                        json={"checkin_time": "16:30", "checkout_time": "10:00", "name": " Attic "})
    assert resp.status_code == 200
    body = resp.get_json()
    assert (body["checkin_time"], body["checkout_time"], body["name"]) == ("16:30", "10:00", "Attic")
    # fields left out keep their value
    body = client.patch(f"/api/v1/locks/{lock_id}", headers=H(t), json={"checkout_time": "09:45"}).get_json()
    assert (body["checkin_time"], body["checkout_time"]) == ("16:30", "09:45")
    for bad, word in [({"checkin_time": "25:00"}, "checkin_time"), ({"checkin_time": "3pm"}, "checkin_time"),
                      ({"checkout_time": "9:00"}, "checkout_time"), ({"checkout_time": 900}, "checkout_time"),
                      ({"checkin_time": "15:00:00"}, "checkin_time"), ({"mac": "24a16054ab3d"}, "mac"),
                      ({"status": "active"}, "status"), ({"timezone": "Mars/Base"}, "time zone"),
                      ({"name": ""}, "name")]:
        resp = client.patch(f"/api/v1/locks/{lock_id}", headers=H(t), json=bad)
        assert resp.status_code == 400 and word in resp.get_json()["message"], (bad, resp.get_json())
    assert client.patch(f"/api/v1/locks/{lock_id}", headers=H(t), data="x").status_code == 400
    body = client.get(f"/api/v1/locks/{lock_id}", headers=H(t)).get_json()
    assert (body["checkin_time"], body["checkout_time"], body["name"]) == ("16:30", "09:45", "Attic")
    # another agency's token: 404, nothing changed
    other = api_token()
    assert client.patch(f"/api/v1/locks/{lock_id}", headers=H(other), json={"checkin_time": "12:00"}).status_code == 404
    with app.app_context():
        assert db.session.get(Lock, lock_id).checkin_time.strftime("%H:%M") == "16:30"


def test_alert_settings_refuse_what_is_not_a_list_of_kinds(client, api_token):
    """Whatever JSON stands in `on`, the answer is a 400 naming the kinds, never a server error."""
    t = api_token()
    for bad in [{}, {"on": None}, {"on": "offline"}, {"on": [{"kind": "offline"}]}, {"on": [["offline"]]},
                {"on": ["offline", 3]}]:
        resp = client.put("/api/v1/alert-settings", headers=H(t), json=bad)
        assert resp.status_code == 400 and "offline" in resp.get_json()["message"], (bad, resp.get_data())
    assert client.get("/api/v1/alert-settings", headers=H(t)).get_json()["on"] == list(
        client.get("/api/v1/alert-settings", headers=H(t)).get_json()["kinds"])
