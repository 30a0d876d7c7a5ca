"""Server-rendered pages: accounts, lock registry, codes, history, CSV, revocation."""
import csv
import io
import re
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from cloud.extensions import db
from cloud.models import AuditEvent, Code, Lock, User

UTC = timezone.utc


def _signup(client, smtp_server, deliver_mail, email="boss@agency.example.com", name="Sunny Stays"):
    """Sign up through the form and the confirmation mail; returns the confirmation page's response."""
    resp = client.post("/signup", data={"agency_name": name, "email": email})
    assert resp.status_code == 200 and b"Check your email" in resp.data
    deliver_mail()
    link = re.search(r"http://keydrop.example.com(/signup/confirm/\S+)", smtp_server.text(smtp_server.to(email)[-1]))
    return client.post(link.group(1), data={"password": "long enough pw", "confirm": "long enough pw"})


def test_signup_login_logout(client, smtp_server, deliver_mail):
    resp = _signup(client, smtp_server, deliver_mail)
    assert resp.status_code == 302 and resp.headers["Location"] == "/locks/"
    assert b"Sunny Stays" in client.get("/locks/").data
    client.post("/logout")
    assert client.get("/locks/").status_code == 302
    assert b"Wrong email or password" in client.post("/login", data={"email": "boss@agency.example.com",
                                                                       "password": "nope"}, follow_redirects=True).data
    resp = client.post("/login", data={"email": "BOSS@agency.example.com", "password": "long enough pw"})
    assert resp.status_code == 302
    assert b"Locks" in client.get("/locks/").data


def test_signup_never_says_an_account_exists_and_refuses_weak_passwords(app, client, smtp_server, deliver_mail):
    _signup(client, smtp_server, deliver_mail)
    client.post("/logout", follow_redirects=True)
    fresh = client.post("/signup", data={"agency_name": "Other", "email": "new@agency.example.com"})
    again = client.post("/signup", data={"agency_name": "Other", "email": "Boss@Agency.example.com"})
    assert again.status_code == fresh.status_code == 200
    assert again.data.decode().replace("boss@", "new@") == fresh.data.decode()  # the same page, but the address
    deliver_mail()
    [reminder] = [m for m in smtp_server.to("boss@agency.example.com") if "/signup/confirm/" not in smtp_server.text(m)]
    assert "already has an account" in smtp_server.text(reminder) and "/password/forgot" in smtp_server.text(reminder)
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count(User.id))) == 1  # nothing created before confirmation
    link = re.search(r"(/signup/confirm/\S+)", smtp_server.text(smtp_server.to("new@agency.example.com")[0])).group(1)
    for weak, message in [("short", "at least 8"), ("password", "Choose a longer"), ("12345678", "Choose a longer"),
                          ("new@agency.example.com", "Choose a longer")]:
        resp = client.post(link, data={"password": weak, "confirm": weak})
        assert resp.status_code == 200 and message in resp.data.decode(), weak
    assert client.post(link, data={"password": "long enough pw", "confirm": "long enough pw"}).status_code == 302


def test_password_reset_by_email(app, client, smtp_server, make_agency, deliver_mail):
    ag = make_agency()
    resp = client.post("/password/forgot", data={"email": ag.email})
    assert resp.status_code == 302
    client.post("/password/forgot", data={"email": "nobody@example.com"})  # same answer, told there is no account
    deliver_mail()
    [mail] = smtp_server.to(ag.email)
    link = re.search(r"http://keydrop.example.com(/password/reset/\S+)", smtp_server.text(mail)).group(1)
    assert client.get(link).status_code == 200
    resp = client.post(link, data={"password": "brand new pass", "confirm": "brand new pass"})
    assert resp.status_code == 302
    client.post("/logout")
    # the link is single-use and the old password is gone
    assert client.get(link).status_code == 302
    assert client.post("/login", data={"email": ag.email, "password": ag.password}).status_code == 200
    assert client.post("/login", data={"email": ag.email, "password": "brand new pass"}).status_code == 302
    [nobody] = smtp_server.to("nobody@example.com")
    assert "no KeyDrop account" in smtp_server.text(nobody) and "/password/reset/" not in smtp_server.text(nobody)
    assert len(smtp_server.messages) == 2


def test_owner_invites_staff(app, client, smtp_server, make_agency, login, deliver_mail):
    ag = make_agency()
    login(client, ag)
    resp = client.post("/staff", data={"email": "helper@example.com", "name": "Helper"})
    assert resp.status_code == 302
    deliver_mail()
    [mail] = smtp_server.to("helper@example.com")
    link = re.search(r"(/password/reset/\S+)", smtp_server.text(mail)).group(1)
    staff_client = app.test_client()
    assert staff_client.post(link, data={"password": "staff password", "confirm": "staff password"}).status_code == 302
    assert ag.name.encode() in staff_client.get("/locks/").data
    assert staff_client.get("/staff").status_code == 403  # staff cannot invite
    with app.app_context():
        u = db.session.scalar(sa.select(User).where(User.email == "helper@example.com"))
        assert u.agency_id == ag.id and u.role == "staff"


@pytest.mark.parametrize("raw", ["24:A1:60:54:AB:3C", "24-a1-60-54-ab-3c", "24a16054ab3c", " 24A16054AB3C "])
def test_register_lock_accepts_mac_forms(app, client, make_agency, login, raw):
    login(client, make_agency())
    resp = client.post("/locks/new", data={"mac": raw, "name": "Loft", "address": "1 Main St",
                                           "timezone": "Europe/Paris"})
    assert resp.status_code == 302 and resp.headers["Location"] == "/locks/24a16054ab3c"
    page = client.get("/locks/").data.decode()
    assert "24:A1:60:54:AB:3C" in page and "registered" in page and "never" in page


@pytest.mark.parametrize("raw,message", [
    ("24:A1:60:54:AB", "6 bytes"), ("zz:a1:60:54:ab:3c", "6 bytes"), ("24:a1-60:54:ab:3c", "6 bytes"),
    ("FF:FF:FF:FF:FF:FF", "broadcast"), ("00-00-00-00-00-00", "all-zero")])
def test_register_lock_refuses_bad_macs(client, make_agency, login, raw, message):
    login(client, make_agency())
    resp = client.post("/locks/new", data={"mac": raw, "name": "Loft", "address": "1 Main St",
                                           "timezone": "Europe/Paris"})
    assert resp.status_code == 200 and message in resp.data.decode()


def test_register_lock_refuses_duplicates_and_bad_zone(app, client, make_agency, make_lock, login):
    other = make_agency()
    make_lock(other, mac="24a16054ab3c", active=False)
    login(client, make_agency())
    data = {"mac": "24:a1:60:54:ab:3c", "name": "Loft", "address": "1 Main St", "timezone": "Europe/Paris"}
    resp = client.post("/locks/new", data=data)
    assert b"already registered" in resp.data and other.name.encode() not in resp.data
    resp = client.post("/locks/new", data=dict(data, mac="24a16054ab3d", timezone="Mars/Olympus"))
    assert b"Unknown time zone" in resp.data
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count(Lock.id))) == 1


def test_lock_list_shows_status_last_seen_firmware(client, make_agency, make_lock, login):
    ag = make_agency()
    make_lock(ag, firmware="2.3.4", name="Active one")
    make_lock(ag, active=False, name="Idle one")
    login(client, ag)
    page = client.get("/locks/").data.decode()
    assert "2.3.4" in page and page.count('class="badge active"') == 1 and page.count('class="badge registered"') == 1


def test_code_form_refuses_inactive_lock(client, make_agency, make_lock, login):
    ag = make_agency()
    lock_id = make_lock(ag, active=False)
    login(client, ag)
    resp = client.post(f"/locks/{lock_id}/codes/new", data={"check_in": "2031-01-01T15:00",
                                                            "check_out": "2031-01-02T11:00"})
    assert resp.status_code == 409 and b"not come online yet" in resp.data


def test_generate_code_in_local_time(app, client, make_agency, make_lock, login):
    ag = make_agency()
    lock_id = make_lock(ag, timezone="Asia/Tokyo")
    login(client, ag)
    form = client.get(f"/locks/{lock_id}/codes/new").data.decode()
    assert re.search(r'id="check_in"[^>]*value="\d{4}-\d\d-\d\dT15:00"', form)
    resp = client.post(f"/locks/{lock_id}/codes/new", data={
        "check_in": "2031-03-10T15:00", "check_out": "2031-03-12T10:00", "customer_name": "Ken"})
    assert resp.status_code == 200 and b'id="new-code"' in resp.data
    with app.app_context():
        code = db.session.scalar(sa.select(Code))
        assert code.valid_from == datetime(2031, 3, 10, 6, 0, tzinfo=UTC)
        assert code.valid_until == datetime(2031, 3, 12, 1, 0, tzinfo=UTC)
        assert code.customer_name == "Ken" and code.created_by_id == ag.owner_id
    for ci, co, msg in [("2031-03-12T15:00", "2031-03-10T10:00", b"after the check-in"),
                        ("2020-01-01T15:00", "2020-01-02T10:00", b"already ended"),
                        ("2031-01-01T15:00", "2032-02-01T10:00", b"one year")]:
        resp = client.post(f"/locks/{lock_id}/codes/new", data={"check_in": ci, "check_out": co})
        assert msg in resp.data


def _history_setup(app, client, make_agency, make_lock, login):
    ag = make_agency()
    a = make_lock(ag, name="Alpha")
    b = make_lock(ag, name="Bravo")
    login(client, ag)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    from cloud import domain
    with app.app_context():
        owner = db.session.get(User, ag.owner_id)
        c1 = domain.generate_code(db.session.get(Lock, a), valid_from=now - timedelta(hours=1),
                                  valid_until=now + timedelta(days=1), by=owner, customer_name="=HYPERLINK(1)")
        c2 = domain.generate_code(db.session.get(Lock, b), valid_from=now + timedelta(days=3),
                                  valid_until=now + timedelta(days=4), by=owner, customer_name="Zoe",
                                  customer_email="zoe@example.com")
        return ag, a, b, c1.id, c2.id


def test_history_filters_and_revoke(app, client, make_agency, make_lock, login):
    ag, a, b, c1, c2 = _history_setup(app, client, make_agency, make_lock, login)
    page = client.get("/codes/").data.decode()
    assert f'data-code="{c1}"' in page and f'data-code="{c2}"' in page and "waiting for the lock" in page
    assert ag.email in page  # who generated it
    page = client.get(f"/codes/?lock={b}").data.decode()
    assert f'data-code="{c1}"' not in page and f'data-code="{c2}"' in page
    page = client.get("/codes/?status=scheduled").data.decode()
    assert f'data-code="{c1}"' not in page and f'data-code="{c2}"' in page
    page = client.get("/codes/?customer=zoe").data.decode()
    assert f'data-code="{c1}"' not in page and f'data-code="{c2}"' in page
    resp = client.post(f"/codes/{c1}/revoke")
    assert resp.status_code == 302
    page = client.get("/codes/?status=revoked").data.decode()
    assert f'data-code="{c1}"' in page and f'data-code="{c2}"' not in page
    with app.app_context():
        assert db.session.get(Code, c1).revoked_by_id == ag.owner_id


def test_csv_export(app, client, make_agency, make_lock, login):
    ag, a, b, c1, c2 = _history_setup(app, client, make_agency, make_lock, login)
    resp = client.get("/codes/export.csv?status=active")
    assert resp.mimetype == "text/csv" and "attachment" in resp.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(resp.data.decode("utf-8-sig"))))
    assert [int(r["id"]) for r in rows] == [c1]
    assert rows[0]["status"] == "active" and rows[0]["lock_name"] == "Alpha"
    assert rows[0]["customer_name"] == "'=HYPERLINK(1)"  # formula neutralised
    rows = list(csv.DictReader(io.StringIO(client.get("/codes/export.csv").data.decode("utf-8-sig"))))
    assert {int(r["id"]) for r in rows} == {c1, c2}


def test_lock_page_shows_access_log_and_reveals_backup_key(app, client, make_agency, make_lock, login):
    ag = make_agency()
    lock_id = make_lock(ag)
    from cloud import domain
    with app.app_context():
        lock = db.session.get(Lock, lock_id)
        key = lock.backup_key
        now = datetime.now(UTC)
        code = domain.generate_code(lock, valid_from=now, valid_until=now + timedelta(days=1),
                                    by=db.session.get(User, ag.owner_id), customer_name="Lin")
        domain.record_events(lock, [{"seq": 1, "t": int(now.timestamp()), "kind": "open", "code_id": code.id},
                                    {"seq": 2, "t": None, "kind": "lockout", "code_id": None}])
    login(client, ag)
    page = client.get(f"/locks/{lock_id}").data.decode()
    assert "Keypad paused after wrong codes" in page and "(Lin)" in page and "no trusted clock" in page
    assert f'id="backup-key">{key}<' not in page
    resp = client.post(f"/locks/{lock_id}/backup-key")  # POST-redirect-GET: the key is never in the POST's answer
    assert resp.status_code == 302 and key not in resp.data.decode()
    for _ in range(2):  # shown after the redirect, and on a reload, without recording another reveal
        resp = client.get(resp.headers.get("Location") or f"/locks/{lock_id}")
        assert f'id="backup-key">{key}<' in resp.data.decode() and resp.headers["Cache-Control"] == "no-store"
    with client.session_transaction() as s:  # the reveal window (5 min) is over
        s["revealed"]["until"] = 0
    assert f'id="backup-key">{key}<' not in client.get(f"/locks/{lock_id}").data.decode()
    with app.app_context():
        [audit] = db.session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "reveal_backup_key")).all()
        assert audit.user_id == ag.owner_id and audit.lock_id == lock_id
