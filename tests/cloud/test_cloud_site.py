"""The site's honest status and lock management: edit, decommission, calendar, overlap and offline warnings,
"removed from the lock", the backup card, last contact, agency mails in the guest's language, CSV and filters."""
import csv
import io
import re
from datetime import datetime, time, timedelta, timezone

import pytest
import sqlalchemy as sa

from cloud import domain
from cloud.extensions import db
from cloud.models import BridgeLockState, Code, Lock, LockEvent, User
from cloud.timeutil import DEFAULT_TIMEZONE

UTC = timezone.utc


def _code(app, ag, lock_id, start, end, **kw):
    with app.app_context():
        return domain.generate_code(db.session.get(Lock, lock_id), valid_from=start, valid_until=end,
                                    by=db.session.get(User, ag.owner_id), **kw).id


def test_edit_a_lock_including_check_in_and_out_times(app, client, make_agency, make_lock, login):
    ag = make_agency()
    lock_id = make_lock(ag)
    login(client, ag)
    assert "15:00" in client.get(f"/locks/{lock_id}/edit").data.decode()
    resp = client.post(f"/locks/{lock_id}/edit", data={"name": "Flat 4", "address": "4 rue Neuve", "timezone": "Bogus/Zone",
                                                       "checkin_time": "16:30", "checkout_time": "10:00"})
    assert resp.status_code == 200 and "Unknown time zone" in resp.data.decode()
    resp = client.post(f"/locks/{lock_id}/edit", data={"name": "Flat 4", "address": "4 rue Neuve",
                                                       "timezone": "Europe/London", "checkin_time": "16:30",
                                                       "checkout_time": "10:00"})
    assert resp.status_code == 302
    with app.app_context():
        lock = db.session.get(Lock, lock_id)
        assert (lock.name, lock.address, lock.timezone) == ("Flat 4", "4 rue Neuve", "Europe/London")
        assert (lock.checkin_time, lock.checkout_time) == (time(16, 30), time(10, 0))
    form = client.get(f"/locks/{lock_id}/codes/new").data.decode()  # the code form proposes those times
    assert re.search(r'id="check_in"[^>]*value="\d{4}-\d\d-\d\dT16:30"', form)
    assert re.search(r'id="check_out"[^>]*value="\d{4}-\d\d-\d\dT10:00"', form)


def test_decommission_revokes_wipes_frees_the_mac_and_keeps_history(app, client, make_agency, make_lock, login,
                                                                     monkeypatch):
    from cloud import broker_credentials
    revoked = []
    monkeypatch.setattr(broker_credentials, "revoke", lambda lock_id, config=None: revoked.append(lock_id) or True)
    ag = make_agency()
    lock_id = make_lock(ag, name="Old flat")
    now = datetime.now(UTC).replace(microsecond=0)
    code_id = _code(app, ag, lock_id, now, now + timedelta(days=2), customer_name="Ines")
    with app.app_context():
        lock = db.session.get(Lock, lock_id)
        old_secret = lock.secret
        domain.record_events(lock, [{"seq": 1, "t": int(now.timestamp()), "kind": "opened", "code_id": code_id}])
        db.session.add(BridgeLockState(lock_id=lock_id, online=True, online_changed_at=now))
        db.session.commit()
    login(client, ag)
    resp = client.post(f"/locks/{lock_id}/decommission")
    assert resp.status_code == 302
    archive = resp.headers["Location"].rsplit("/", 1)[1]
    assert archive != lock_id and archive.startswith("zz")
    assert revoked == [lock_id]  # its broker login is removed
    with app.app_context():
        assert db.session.get(Lock, lock_id) is None  # the MAC is free…
        old = db.session.get(Lock, archive)
        assert old.is_decommissioned and old.secret != old_secret and old.decommissioned_mac == lock_id
        code = db.session.get(Code, code_id)
        assert code.revoked_at is not None and code.lock_id == archive
        assert db.session.scalar(sa.select(LockEvent.lock_id)) == archive
        assert db.session.get(BridgeLockState, lock_id) is None
    page = client.get(f"/locks/{archive}").data.decode()  # …and the history is still there
    assert "Decommissioned on" in page and "Ines" in page and "Reveal the backup key" not in page
    assert "lock decommissioned" in client.get("/codes/").data.decode()
    assert "Decommissioned locks (1)" in client.get("/locks/").data.decode()
    assert client.post(f"/locks/{archive}/codes/new").status_code in (200, 409)
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count(Code.id))) == 1
    # …so it can be registered again (a replacement board, or the lock moved to another agency)
    resp = client.post("/locks/new", data={"mac": lock_id, "name": "New flat", "address": "1 rue X",
                                           "timezone": "Europe/Paris"})
    assert resp.status_code == 302


def test_staff_cannot_edit_or_decommission(app, make_agency, make_lock):
    from cloud.staff import invite_staff
    ag = make_agency()
    lock_id = make_lock(ag)
    with app.app_context():
        u = invite_staff(db.session.get(User, ag.owner_id), email="st@example.com", role="staff")
        u.set_password("staff passphrase ok")
        db.session.commit()
    c = app.test_client()
    c.post("/login", data={"email": "st@example.com", "password": "staff passphrase ok"})
    assert c.get(f"/locks/{lock_id}/edit").status_code == 403
    assert c.post(f"/locks/{lock_id}/decommission").status_code == 403
    assert ">Edit<" not in c.get(f"/locks/{lock_id}").data.decode()


def test_calendar_shows_weeks_bars_and_today(app, client, make_agency, make_lock, login):
    ag = make_agency()
    lock_id = make_lock(ag)
    now = datetime.now(UTC).replace(microsecond=0)
    a = _code(app, ag, lock_id, now, now + timedelta(days=10), customer_name="Long Stay")
    b = _code(app, ag, lock_id, now + timedelta(days=60), now + timedelta(days=61), customer_name="Far Away")
    login(client, ag)
    page = client.get(f"/locks/{lock_id}/calendar").data.decode()
    assert page.count('class="week"') == 6
    assert page.count('aria-current="date"') == 1
    assert page.count(f'data-code="{a}"') >= 2  # ten days: a bar in two or three weeks
    assert "cont-r" in page and f'data-code="{b}"' not in page
    later = client.get(f"/locks/{lock_id}/calendar?from={(now + timedelta(days=56)).date()}").data.decode()
    assert f'data-code="{b}"' in later and 'aria-current="date"' not in later
    assert client.get(f"/locks/{lock_id}/calendar?from=junk").status_code == 200


def test_overlap_and_offline_warnings_on_the_code_form(app, client, make_agency, make_lock, login):
    ag = make_agency()
    lock_id = make_lock(ag)
    login(client, ag)
    day = (datetime.now(UTC) + timedelta(days=3)).strftime("%Y-%m-%d")
    nxt = (datetime.now(UTC) + timedelta(days=5)).strftime("%Y-%m-%d")
    data = {"check_in": f"{day}T15:00", "check_out": f"{nxt}T11:00", "customer_name": "First", "locale": "en"}
    assert "overlaps" not in client.post(f"/locks/{lock_id}/codes/new", data=data).data.decode()
    page = client.post(f"/locks/{lock_id}/codes/new", data=dict(data, customer_name="Second")).data.decode()
    assert "overlaps code" in page and "(First)" in page
    assert "offline" not in client.get(f"/locks/{lock_id}/codes/new").data.decode()
    with app.app_context():
        db.session.add(BridgeLockState(lock_id=lock_id, online=False, online_changed_at=datetime.now(UTC)))
        db.session.commit()
    page = client.get(f"/locks/{lock_id}/codes/new").data.decode()
    assert 'id="offline-warning"' in page and "backup key" in page


def test_revoked_code_shows_removed_from_the_lock_once_acknowledged(app, client, make_agency, make_lock, login):
    ag = make_agency()
    lock_id = make_lock(ag)
    now = datetime.now(UTC).replace(microsecond=0)
    code_id = _code(app, ag, lock_id, now, now + timedelta(days=1))
    login(client, ag)
    client.post(f"/codes/{code_id}/revoke")
    assert "waiting for the lock to confirm" in client.get("/codes/").data.decode()
    with app.app_context():
        lock = db.session.get(Lock, lock_id)
        domain.codeset_acknowledged(lock, lock.desired_revision - 1)  # an older state: still on the lock
        assert db.session.get(Code, code_id).removed_at is None
        domain.codeset_acknowledged(lock, lock.desired_revision)
        assert db.session.get(Code, code_id).removed_at is not None
    assert re.search(r"removed from the lock at \d{4}-\d\d-\d\d \d\d:\d\d", client.get("/codes/").data.decode())


def test_backup_card_first_use_and_planned_replacement(app, client, make_agency, make_lock, login):
    ag = make_agency()
    lock_id = make_lock(ag, timezone="UTC")
    login(client, ag)
    assert "Not used yet" in client.get(f"/locks/{lock_id}").data.decode()
    used = datetime(2030, 3, 4, 10, 0, tzinfo=UTC)
    with app.app_context():
        domain.record_events(db.session.get(Lock, lock_id),
                             [{"seq": 7, "t": int(used.timestamp()), "kind": "opened_backup"}])
    page = client.get(f"/locks/{lock_id}").data.decode()
    assert "First used 2030-03-04 10:00 UTC" in page and "replaced around 2030-03-05 10:00 UTC" in page
    with app.app_context():
        domain.rotate_backup(db.session.get(Lock, lock_id), first_used_at=int(used.timestamp()))
    assert "A new key is being installed" in client.get(f"/locks/{lock_id}").data.decode()


def test_last_contact_and_plain_words(app, client, make_agency, make_lock, login):
    ag = make_agency()
    lock_id = make_lock(ag, timezone="UTC")
    with app.app_context():  # the bridge moves last_seen_at on every verified message
        db.session.get(Lock, lock_id).last_seen_at = datetime(2030, 1, 2, 3, 4, tzinfo=UTC)
        db.session.commit()
    login(client, ag)
    page = client.get(f"/locks/{lock_id}").data.decode()
    assert re.search(r'id="last-contact">2030-01-02 03:04 UTC<', page)
    assert "Last contact" in client.get("/locks/").data.decode()
    assert "revision" not in page and "codeset" not in page and "Sending the latest changes" in page


def test_code_mails_come_from_the_agency_with_links_and_the_guest_language(
        app, client, make_agency, make_lock, login, smtp_server, deliver_mail):
    ag = make_agency(name="Agence Éloïse")
    lock_id = make_lock(ag, name="Porte bleue", address="5 quai des Arts, Paris")
    login(client, ag)
    day = (datetime.now(UTC) + timedelta(days=3)).strftime("%Y-%m-%d")
    client.post(f"/locks/{lock_id}/codes/new", data={"check_in": f"{day}T15:00", "check_out": f"{day}T23:00",
                                                    "customer_name": "Zoé", "customer_email": "zoe@example.com",
                                                    "locale": "fr"})
    deliver_mail()
    [owner] = [m for m in smtp_server.to(ag.email) if m["Subject"].startswith("Code ")]
    [guest] = smtp_server.to("zoe@example.com")
    for m in (owner, guest):
        assert m["From"].addresses[0].display_name == "Agence Éloïse"
        assert m["From"].addresses[0].addr_spec == "no-reply@keydrop.example.com"
        assert m["Reply-To"] == ag.email
    text = smtp_server.text(owner)
    assert f"http://keydrop.example.com/locks/{lock_id}" in text
    assert f"http://keydrop.example.com/codes/?lock={lock_id}" in text
    gtext = smtp_server.text(guest)
    assert guest["Subject"] == "Votre code d'accès pour 5 quai des Arts, Paris"
    assert "Agence Éloïse vous envoie le code" in gtext and "Logement:  5 quai des Arts, Paris" in gtext
    assert "Porte:      Porte bleue" in gtext
    assert "Tapez les 4 chiffres sur le clavier, puis appuyez sur #." in gtext
    link = re.search(r"http://keydrop.example.com(/guest/\S+)", gtext).group(1)
    page = app.test_client().get(link)  # no login needed: the signed link is the key
    html = page.data.decode()
    assert page.status_code == 200 and '<html lang="fr">' in html and "Pour ouvrir la porte" in html
    assert page.headers["Referrer-Policy"] == "no-referrer" and page.headers["Cache-Control"] == "no-store"
    assert app.test_client().get(link[:-3] + "abc").status_code == 404


def test_english_guest_mail_by_default(app, make_agency, make_lock, smtp_server, deliver_mail):
    ag = make_agency()
    lock_id = make_lock(ag)
    now = datetime.now(UTC)
    _code(app, ag, lock_id, now, now + timedelta(days=1), customer_email="ann@example.com")
    deliver_mail()
    [m] = smtp_server.to("ann@example.com")
    assert m["Subject"].startswith("Your door code for") and "How to open the door" in smtp_server.text(m)


def test_csv_has_a_bom_and_accents_survive(app, client, make_agency, make_lock, login):
    ag = make_agency()
    lock_id = make_lock(ag, name="Château")
    now = datetime.now(UTC)
    _code(app, ag, lock_id, now, now + timedelta(days=1), customer_name="Zoé Lefèvre")
    login(client, ag)
    body = client.get("/codes/export.csv").data
    assert body.startswith(b"\xef\xbb\xbf")
    [row] = list(csv.DictReader(io.StringIO(body.decode("utf-8-sig"))))
    assert row["customer_name"] == "Zoé Lefèvre" and row["lock_name"] == "Château"


def test_inverted_date_filter_is_refused_with_a_message(app, client, make_agency, make_lock, login):
    ag = make_agency()
    login(client, ag)
    resp = client.get("/codes/?since=2030-05-10&until=2030-05-01")
    assert resp.status_code == 400 and "is after" in resp.data.decode()
    resp = client.get("/codes/export.csv?since=2030-05-10&until=2030-05-01")
    assert resp.status_code == 400 and "is after" in resp.data.decode()


def test_one_default_time_zone_everywhere(app, client, api_token, make_agency, capsys):
    from tools import provision, simlock_cloud
    from cloud.locks.forms import LockForm
    token = api_token()
    resp = client.post("/api/v1/locks", json={"mac": "24a1600000ff", "name": "X", "address": "Y"},
                       headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 201 and resp.get_json()["timezone"] == DEFAULT_TIMEZONE
    with app.test_request_context():
        assert LockForm(meta={"csrf": False}).timezone.data == DEFAULT_TIMEZONE
    # the API's description names it
    new_lock = client.get("/api/v1/openapi.json").get_json()["components"]["schemas"]["NewLock"]
    zone = new_lock["properties"]["timezone"]
    assert zone["example"] == DEFAULT_TIMEZONE and zone["description"].endswith(f"default {DEFAULT_TIMEZONE}")
    # the installer and the simulator send none unless told (the cloud's default applies), and say which it is
    import argparse
    args = provision.parse_args(["--port", "/dev/null", "--cloud", "http://c.example", "--token", "t"])
    assert args.timezone is None
    sim = argparse.ArgumentParser()
    simlock_cloud.add_arguments(sim)
    assert sim.parse_args([]).timezone is None
    with pytest.raises(SystemExit):
        provision.parse_args(["--help"])
    for help_text in (capsys.readouterr().out, sim.format_help()):
        assert f"default: the cloud's, {DEFAULT_TIMEZONE})" in " ".join(help_text.split())
    from tools import devstack
    assert devstack.DEMO_TZ == DEFAULT_TIMEZONE  # the demo lock shows what a new lock gets


def test_the_default_time_zone_is_one_constant_the_rest_follows():
    """Change cloud.timeutil.DEFAULT_TIMEZONE (in a fresh interpreter) and the API description, the tools' help
    and the demo follow: nobody spells the zone again."""
    import subprocess
    import sys
    from pathlib import Path
    probe = """
import argparse, contextlib, io, json
import cloud.timeutil
cloud.timeutil.DEFAULT_TIMEZONE = "Asia/Tokyo"
from cloud.api.openapi import spec
from tools import devstack, provision, simlock_cloud
sim = argparse.ArgumentParser()
simlock_cloud.add_arguments(sim)
out = io.StringIO()
with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
    provision.parse_args(["--help"])
zone = spec()["components"]["schemas"]["NewLock"]["properties"]["timezone"]
print(json.dumps([zone["example"], zone["description"], devstack.DEMO_TZ, " ".join(out.getvalue().split()),
                  " ".join(sim.format_help().split())]))
"""
    root = Path(__file__).resolve().parents[2]
    run = subprocess.run([sys.executable, "-c", probe], cwd=root, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    example, description, demo, provision_help, sim_help = __import__("json").loads(run.stdout)
    assert (example, description, demo) == ("Asia/Tokyo", "IANA zone; default Asia/Tokyo", "Asia/Tokyo")
    for text in (provision_help, sim_help):
        assert "default: the cloud's, Asia/Tokyo)" in text and "Europe/Paris" not in text
