"""Web security of the site: redirects after login, response headers, sessions ending server-side, equal work
for known and unknown accounts, the Secure cookie default; the account page's tokens."""
import re

import pytest
import sqlalchemy as sa

from cloud.extensions import db
from cloud.models import ApiToken, User


@pytest.mark.parametrize("target", ["/%09/127.0.0.1:15009/x", "//evil.example/x", "/\\evil.example", "/%5Cevil.example",
                                    "https://evil.example/", "/%0a/evil.example", "javascript:alert(1)", "/\x7f/x"])
def test_login_next_never_leaves_the_site(client, make_agency, target):
    ag = make_agency()
    resp = client.post(f"/login?next={target}", data={"email": ag.email, "password": ag.password})
    assert resp.status_code == 302 and resp.headers["Location"] == "/locks/"


def test_login_next_keeps_a_path_of_the_site(client, make_agency, make_lock):
    ag = make_agency()
    lock_id = make_lock(ag)
    resp = client.get(f"/codes/?lock={lock_id}")  # not logged in: sent to the login page, then back here
    assert resp.status_code == 302
    resp = client.post(resp.headers["Location"], data={"email": ag.email, "password": ag.password})
    assert resp.headers["Location"] == f"/codes/?lock={lock_id}"


@pytest.mark.parametrize("path", ["/login", "/locks/", "/api/v1/openapi.json", "/static/style.css", "/nope", "/healthz"])
def test_security_headers_on_every_response(client, path):
    _assert_security_headers(client.get(path))


def _assert_security_headers(resp):
    h = resp.headers
    csp = h.get("Content-Security-Policy", "")
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp, resp
    assert h.get("X-Content-Type-Options") == "nosniff" and h.get("X-Frame-Options") == "DENY", resp
    assert h.get("Referrer-Policy") == "same-origin", resp


def test_security_headers_on_refusals_too(strict_app):
    """The answers made by error handlers and extensions, not views: a wrong method, a form without its CSRF
    token, too many attempts, an API call without a token."""
    client = strict_app.test_client()
    resp = client.get("/logout")
    assert resp.status_code == 405 and "POST" in resp.headers["Allow"]
    _assert_security_headers(resp)
    resp = client.post("/login", data={"email": "a@example.com", "password": "whatever it is"})
    assert resp.status_code == 400 and "The form expired" in resp.data.decode()
    _assert_security_headers(resp)
    csrf = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', client.get("/login").data.decode()).group(1)
    answers = [client.post("/login", data={"email": "a@example.com", "password": "whatever it is",
                                           "csrf_token": csrf}) for _ in range(4)]
    assert [r.status_code for r in answers] == [200, 200, 200, 429]
    _assert_security_headers(answers[-1])
    resp = client.get("/api/v1/me")
    assert resp.status_code == 401 and resp.is_json
    _assert_security_headers(resp)
    resp = client.post("/api/v1/tokens", auth=("a@example.com", "wrong password"))
    assert resp.status_code == 401
    _assert_security_headers(resp)


def test_no_inline_script_or_style_in_any_page_template():
    from pathlib import Path
    root = Path(__file__).resolve().parents[2] / "cloud" / "templates"
    for path in root.rglob("*.html"):
        if "email" in path.parts:
            continue  # mails are not served under the CSP (and mail clients need inline styles)
        text = path.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)|<style|\sstyle=|\son[a-z]+=", text), path


def test_a_session_cookie_saved_before_logout_no_longer_works(app, make_agency):
    ag = make_agency()
    phone, laptop = app.test_client(), app.test_client()
    for c in (phone, laptop):
        c.post("/login", data={"email": ag.email, "password": ag.password})
    saved = phone.get_cookie("session").value
    phone.post("/logout")
    thief = app.test_client()
    thief.set_cookie("session", saved)
    assert thief.get("/locks/").status_code == 302  # the old cookie is dead server-side
    assert laptop.get("/locks/").status_code == 302  # and logout ended the other sessions too


def test_password_change_ends_the_other_sessions(app, make_agency):
    ag = make_agency()
    here, there = app.test_client(), app.test_client()
    for c in (here, there):
        c.post("/login", data={"email": ag.email, "password": ag.password})
    resp = here.post("/account/password", data={"current": "wrong one", "password": "a whole new passphrase",
                                                "confirm": "a whole new passphrase"})
    assert resp.status_code == 400 and "not your current password" in resp.data.decode()
    resp = here.post("/account/password", data={"current": ag.password, "password": "password",
                                                "confirm": "password"})
    assert resp.status_code == 400 and "Choose a longer" in resp.data.decode()
    resp = here.post("/account/password", data={"current": ag.password, "password": "a whole new passphrase",
                                                "confirm": "a whole new passphrase"})
    assert resp.status_code == 302
    assert here.get("/locks/").status_code == 200
    assert there.get("/locks/").status_code == 302


def test_the_account_page_says_a_password_change_keeps_the_api_tokens(app, client, make_agency, login):
    ag = make_agency()
    login(client, ag)
    token = re.search(r'id="token-value">(kd_[^<]+)<',
                      client.post("/account/tokens", data={"label": "booking sync"}).data.decode()).group(1)
    assert "Your API tokens keep working" in " ".join(client.get("/account").data.decode().split())
    resp = client.post("/account/password", data={"current": ag.password, "password": "a whole new passphrase",
                                                  "confirm": "a whole new passphrase"}, follow_redirects=True)
    assert "Your API tokens still work" in resp.data.decode()
    # which is true
    assert app.test_client().get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_login_and_token_do_the_same_work_for_unknown_accounts(client, make_agency, monkeypatch):
    """Timing cannot tell an existing address: each answer costs exactly one scrypt check."""
    from cloud.auth import passwords
    ag = make_agency()
    calls = []
    real = passwords.check_password_hash
    monkeypatch.setattr(passwords, "check_password_hash", lambda h, p: calls.append(h.split("$")[0]) or real(h, p))
    for email in (ag.email, "nobody@example.com"):
        client.post("/login", data={"email": email, "password": "wrong password"})
        client.post("/api/v1/tokens", auth=(email, "wrong password"))
    assert calls == ["scrypt:32768:8:1"] * 4


def test_forgot_password_does_the_same_work_for_every_address(app, client, make_agency, monkeypatch):
    """Known, unknown and removed addresses: the same answer, and each request queues exactly one mail (the
    work, and so the time, does not tell which addresses have accounts)."""
    from cloud import auth
    from cloud.models import OutboxMail
    from cloud.staff import invite_staff, remove_member
    ag = make_agency()
    with app.app_context():
        owner = db.session.get(User, ag.owner_id)
        gone = invite_staff(owner, email="gone@example.com")
        gone.set_password("a long enough passphrase")
        remove_member(owner, gone)
    queued = []
    real = auth.enqueue
    monkeypatch.setattr(auth, "enqueue", lambda *a, **kw: queued.append(a[1]) or real(*a, **kw))
    answers = []
    for email in (ag.email, "nobody@example.com", "gone@example.com"):
        resp = client.post("/password/forgot", data={"email": email})
        answers.append((resp.status_code, resp.headers["Location"], client.get("/login").data.decode()))
    assert answers[0] == answers[1] == answers[2]
    assert queued == ["reset", "reset_unknown", "reset_unknown"]
    with app.app_context():
        rows = db.session.scalars(sa.select(OutboxMail).order_by(OutboxMail.id)).all()
        assert [r.recipient for r in rows if r.kind.startswith("reset")] == [ag.email, "nobody@example.com",
                                                                             "gone@example.com"]
        assert "/password/reset/" not in rows[-1].text_body and "/signup" in rows[-1].text_body


def test_secure_cookies_by_default_off_only_when_asked(monkeypatch):
    from cloud import config
    monkeypatch.delenv("SESSION_COOKIE_SECURE", raising=False)
    assert config.from_environment()["SESSION_COOKIE_SECURE"] is True
    monkeypatch.setenv("SESSION_COOKIE_SECURE", "0")
    assert config.from_environment()["SESSION_COOKIE_SECURE"] is False
    from tools.devstack import Stack  # the dev stack serves plain http: it is the one that turns it off
    assert "SESSION_COOKIE_SECURE" in __import__("inspect").getsource(Stack.cloud_env)


def test_account_page_name_and_tokens(app, client, make_agency, login):
    ag = make_agency()
    login(client, ag)
    page = client.get("/account")
    assert page.status_code == 200 and ag.email in page.data.decode()
    client.post("/account/name", data={"name": "Camille Martin"})
    with app.app_context():
        assert db.session.get(User, ag.owner_id).name == "Camille Martin"
    resp = client.post("/account/tokens", data={"label": ""})
    assert resp.status_code == 400 and "Give the token a label" in resp.data.decode()
    resp = client.post("/account/tokens", data={"label": "installer laptop"})
    token = re.search(r'id="token-value">(kd_[^<]+)<', resp.data.decode()).group(1)
    assert resp.headers["Cache-Control"] == "no-store"
    page = client.get("/account").data.decode()
    assert "installer laptop" in page and token not in page  # shown once
    assert "never" in page
    api = app.test_client()
    assert api.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    page = client.get("/account").data.decode()
    assert re.search(r'data-label="Last used">\d{4}-\d\d-\d\d \d\d:\d\d', page)  # last use shown
    with app.app_context():
        tid = db.session.scalar(sa.select(ApiToken.id).where(ApiToken.label == "installer laptop"))
    client.post(f"/account/tokens/{tid}/revoke")
    assert api.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    other = make_agency()
    login(app.test_client(), other)
    assert client.post("/account/tokens/99999/revoke").status_code == 404
