"""Bad input answers with a status and a message a person can act on, never a server error (500): out-of-range
ids and dates, wrong JSON types, bodies that are not JSON or too large, NUL characters (which PostgreSQL
refuses), bad history filters; and every form POST needs its CSRF token."""
import csv
import io
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa

from cloud import domain
from cloud.staff import invite_staff
from cloud.extensions import db
from cloud.models import Code, Lock, User

UTC = timezone.utc
HUGE_ID = "99999999999999999999999"


def H(token):
    return {"Authorization": f"Bearer {token}"}


def _count(model):
    return db.session.scalar(sa.select(sa.func.count()).select_from(model))


def _code(app, agency, lock_id, start, end, **kw):
    with app.app_context():
        return domain.generate_code(db.session.get(Lock, lock_id), valid_from=start, valid_until=end,
                                    by=db.session.get(User, agency.owner_id), **kw).id


def test_out_of_range_code_ids_are_not_found(app, client, make_agency, make_lock, api_token, login):
    ag = make_agency()
    t = api_token(ag)
    for method in ("GET", "DELETE"):
        resp = client.open(f"/api/v1/codes/{HUGE_ID}", method=method, headers=H(t))
        assert resp.status_code == 404 and resp.get_json() == {"message": "Not found."}
    login(client, ag)
    resp = client.post(f"/codes/{HUGE_ID}/revoke")
    assert resp.status_code == 404 and b"This page does not exist." in resp.data


def test_code_list_paging_and_status_errors(client, api_token):
    t = api_token()
    resp = client.get(f"/api/v1/codes?offset={HUGE_ID}", headers=H(t))
    assert resp.status_code == 400 and resp.get_json() == {"message": "offset is at most 2147483647."}
    resp = client.get("/api/v1/codes?limit=ten", headers=H(t))
    assert resp.status_code == 400 and resp.get_json() == {"message": "limit and offset are integers."}
    resp = client.get("/api/v1/codes?status=live", headers=H(t))
    assert resp.status_code == 400
    assert resp.get_json() == {"message": "status is one of scheduled, active, expired, revoked."}
    assert client.get("/api/v1/codes?offset=2147483647", headers=H(t)).get_json() == {"codes": []}


def test_api_dates_out_of_range(app, client, make_agency, make_lock, api_token):
    ag = make_agency()
    lock_id = make_lock(ag)
    t = api_token(ag)
    cases = [
        ("9999-12-31T20:00:00-05:00", "9999-12-31T23:00:00-05:00", "valid_from is out of range."),  # UTC year 10000
        ("2030-01-01T00:00:00Z", "0001-01-01T00:00:00+05:00", "valid_until is out of range."),      # UTC year 0
        # further than the lock's clock can carry (unsigned 32-bit seconds): the bridge could not send it
        ("2200-01-01T15:00:00Z", "2200-01-03T11:00:00Z", "A code must end by 2106-02-07 (the lock counts time in 32 bits)."),
    ]
    for start, end, message in cases:
        resp = client.post(f"/api/v1/locks/{lock_id}/codes", headers=H(t),
                           json={"valid_from": start, "valid_until": end})
        assert resp.status_code == 400 and resp.get_json() == {"message": message}, (start, end)
    with app.app_context():
        assert _count(Code) == 0


def test_web_dates_out_of_range(app, client, make_agency, make_lock, login):
    ag = make_agency()
    lock_id = make_lock(ag, timezone="America/New_York")
    login(client, ag)
    resp = client.post(f"/locks/{lock_id}/codes/new", data={"check_in": "9999-12-31T20:00",
                                                            "check_out": "9999-12-31T23:00"})
    assert resp.status_code == 200 and "9999-12-31 20:00 is out of range." in resp.data.decode()
    resp = client.post(f"/locks/{lock_id}/codes/new", data={"check_in": "2200-01-01T15:00",
                                                            "check_out": "2200-01-03T11:00"})
    assert resp.status_code == 200 and "A code must end by 2106-02-07" in resp.data.decode()
    with app.app_context():
        assert _count(Code) == 0


def test_api_wrong_types_and_long_text(app, client, make_agency, make_lock, api_token):
    ag = make_agency()
    t = api_token(ag)
    good = {"mac": "24a16054ab3c", "name": "Loft", "address": "1 Main St", "timezone": "Europe/Rome"}
    cases = [({"name": None}, "The lock needs a name."),
             ({"name": 42}, "name must be a string."),
             ({"mac": 0x24a16054ab3c}, "mac must be a string."),
             ({"timezone": ["UTC"]}, "timezone must be a string."),
             ({"address": {"street": "Main"}}, "address must be a string."),
             ({"name": "n" * 121}, "The lock's name can have at most 120 characters."),
             ({"address": "a" * 501}, "The address can have at most 500 characters.")]
    for change, message in cases:
        resp = client.post("/api/v1/locks", headers=H(t), json=dict(good, **change))
        assert resp.status_code == 400 and resp.get_json() == {"message": message}, change
    with app.app_context():
        assert _count(Lock) == 0
    lock_id = make_lock(ag)
    now = datetime.now(UTC)
    body = {"valid_from": now.isoformat(), "valid_until": (now + timedelta(days=1)).isoformat()}
    for change, message in [({"customer_email": 5}, "customer_email must be a string."),
                            ({"customer_name": ["Ann"]}, "customer_name must be a string of at most 120 characters."),
                            ({"valid_from": 1767225600}, "valid_from is required: an ISO 8601 date-time with offset, "
                                                         "e.g. 2026-07-01T15:00:00+02:00.")]:
        resp = client.post(f"/api/v1/locks/{lock_id}/codes", headers=H(t), json=dict(body, **change))
        assert resp.status_code == 400 and resp.get_json() == {"message": message}, change


def test_bodies_that_are_not_a_json_object(client, api_token):
    t = api_token()
    message = {"message": "Send a JSON object (Content-Type: application/json)."}
    for data in ["nope", "[1, 2]", "[" * 5000 + "]" * 5000, '{"mac": ']:
        resp = client.post("/api/v1/locks", headers=dict(H(t), **{"Content-Type": "application/json"}), data=data)
        assert resp.status_code == 400 and resp.get_json() == message, data[:20]


def test_too_large_bodies(client, api_token, make_agency, login):
    ag = make_agency()
    t = api_token(ag)
    resp = client.post("/api/v1/locks", headers=H(t), json={"mac": "x" * (2 * 1024 * 1024)})
    assert resp.status_code == 413 and resp.get_json() == {"message": "The request is too large."}
    login(client, ag)
    resp = client.post("/locks/new", data={"mac": "24a16054ab3c", "name": "n" * (2 * 1024 * 1024)})
    assert resp.status_code == 413 and b"The request is too large." in resp.data


def test_nul_characters_are_refused(app, client, make_agency, make_lock, api_token, login):
    # (PostgreSQL cannot store or even compare them: these were server errors there)
    ag = make_agency()
    lock_id = make_lock(ag)
    t = api_token(ag)
    message = "Text may not contain NUL characters (\\u0000)."
    resps = [client.get("/api/v1/locks/24a16054ab3c%00", headers=H(t)),
             client.get("/api/v1/codes?lock_id=%00", headers=H(t)),
             client.post("/api/v1/locks", headers=H(t), json={"mac": "24a16054ab3d", "name": "Lo\u0000ft",
                                                               "address": "1 Main St", "timezone": "UTC"}),
             client.post(f"/api/v1/locks/{lock_id}/codes", headers=H(t), json={"customer_name": "\u0000"}),
             client.post("/api/v1/tokens", auth=(ag.email + "\x00", "x"))]
    for resp in resps:
        assert resp.status_code == 400 and resp.get_json() == {"message": message}, resp.request.path
    resps = [client.post("/login", data={"email": "a\x00@example.com", "password": "x"}),
             client.post("/password/forgot", data={"email": "a\x00@example.com"})]
    login(client, ag)
    resps += [client.get("/codes/?customer=%00"), client.get("/codes/export.csv?lock=%00"),
              client.get(f"/locks/{lock_id}%00"),
              client.post(f"/locks/{lock_id}/codes/new", data={"check_in": "2031-01-01T15:00",
                                                               "check_out": "2031-01-02T11:00",
                                                               "customer_name": "A\x00"})]
    for resp in resps:
        assert resp.status_code == 400 and message in resp.data.decode(), resp.request.path
    with app.app_context():
        assert _count(Code) == 0 and _count(Lock) == 1


def _two_codes(app, make_agency, make_lock):
    ag = make_agency()
    lock_id = make_lock(ag)
    day = (datetime.now(UTC) + timedelta(days=10)).replace(hour=15, minute=0, second=0, microsecond=0)
    a = _code(app, ag, lock_id, day, day + timedelta(days=2), customer_name="Zoe_1")
    b = _code(app, ag, lock_id, day + timedelta(days=5), day + timedelta(days=6), customer_name="Zoe21")
    return ag, day, a, b


def test_history_filters_with_bad_values(app, client, make_agency, make_lock, login, api_token):
    ag, day, a, b = _two_codes(app, make_agency, make_lock)
    login(client, ag)
    for query, message in [("since=2026-13-01", "From “2026-13-01” is not a date (YYYY-MM-DD)."),
                           ("until=tomorrow", "To “tomorrow” is not a date (YYYY-MM-DD)."),
                           ("status=live", "status is one of scheduled, active, expired, revoked.")]:
        resp = client.get(f"/codes/?{query}")
        page = resp.data.decode()
        assert resp.status_code == 400 and f'id="filter-error">{message}<' in page, query
        assert "data-code=" not in page  # no list that pretends to be filtered
        resp = client.get(f"/codes/export.csv?{query}")  # refused rather than exporting everything
        assert resp.status_code == 400 and resp.mimetype == "text/plain" and resp.data.decode().strip() == message
    resp = client.get("/api/v1/codes?status=live", headers=H(api_token(ag)))
    assert resp.status_code == 400


def test_history_to_date_includes_that_day(app, client, make_agency, make_lock, login):
    ag, day, a, b = _two_codes(app, make_agency, make_lock)
    login(client, ag)
    d = f"{day:%Y-%m-%d}"
    page = client.get(f"/codes/?since={d}&until={d}").data.decode()  # code a starts that day at 15:00
    assert f'data-code="{a}"' in page and f'data-code="{b}"' not in page
    rows = list(csv.DictReader(io.StringIO(client.get(f"/codes/export.csv?since={d}&until={d}").data.decode("utf-8-sig"))))
    assert [int(r["id"]) for r in rows] == [a]
    before = f"{day - timedelta(days=1):%Y-%m-%d}"
    assert "data-code=" not in client.get(f"/codes/?until={before}").data.decode()


def test_customer_filter_is_taken_literally(app, client, make_agency, make_lock, login):
    ag, day, a, b = _two_codes(app, make_agency, make_lock)
    login(client, ag)
    page = client.get("/codes/?customer=zoe_").data.decode()  # "_" is not a wildcard
    assert f'data-code="{a}"' in page and f'data-code="{b}"' not in page
    resp = client.get("/codes/?customer=%25")  # "%" neither
    assert resp.status_code == 200 and "data-code=" not in resp.data.decode() and "No code matches." in resp.data.decode()


def test_every_form_post_needs_its_csrf_token(app, strict_app, make_agency, make_lock):
    ag = make_agency()
    lock_id = make_lock(ag)
    now = datetime.now(UTC)
    code_id = _code(app, ag, lock_id, now, now + timedelta(days=1))
    c = strict_app.test_client()
    with c.session_transaction() as s:  # logged in (the login form itself is in the list below)
        with strict_app.app_context():
            user = db.session.get(User, ag.owner_id)
            s["uid"], s["sv"] = user.id, user.session_version
    tried = []
    for rule in strict_app.url_map.iter_rules():
        if "POST" not in rule.methods or rule.rule.startswith("/api/"):
            continue
        url = (rule.rule.replace("<lock_id>", lock_id).replace("<int:code_id>", str(code_id))
               .replace("<token>", "t").replace("<int:user_id>", str(ag.owner_id))
               .replace("<int:token_id>", "1").replace("<int:endpoint_id>", "1"))
        resp = c.post(url, data={"email": ag.email, "password": ag.password})
        assert resp.status_code == 400, (rule.rule, resp.status_code)
        assert "The form expired or was not sent from this site" in resp.data.decode(), rule.rule
        tried.append(rule.rule)
    assert len(tried) >= 9, tried
    with app.app_context():
        assert db.session.get(Code, code_id).revoked_at is None


def test_csv_neutralises_a_formula_in_the_generating_staff_email(app, client, make_agency, make_lock, login):
    # "=…@example.com" is a valid address, and the owner types staff addresses in: neutralised like the rest
    ag = make_agency()
    lock_id = make_lock(ag)
    with app.app_context():
        staff = invite_staff(db.session.get(User, ag.owner_id), email="=1+1@example.com")
        now = datetime.now(UTC)
        domain.generate_code(db.session.get(Lock, lock_id), valid_from=now, valid_until=now + timedelta(days=1),
                             by=staff)
    login(client, ag)
    [row] = list(csv.DictReader(io.StringIO(client.get("/codes/export.csv").data.decode("utf-8-sig"))))
    assert row["generated_by"] == "'=1+1@example.com"
