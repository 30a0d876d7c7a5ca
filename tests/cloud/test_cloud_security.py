"""CSRF, cookies, rate limits, password hashing, secrets kept out of logs and pages, CLI, migrations."""
import logging
import re

import pytest
import sqlalchemy as sa

from cloud import create_app
from cloud.extensions import db
from cloud.models import Lock, User


def _csrf(page: bytes) -> str:
    m = (re.search(rb'name="csrf_token" type="hidden" value="([^"]+)"', page)
         or re.search(rb'type="hidden" name="csrf_token" value="([^"]+)"', page))
    return m.group(1).decode()


def test_csrf_required_on_forms(strict_app, make_agency):
    ag = make_agency()
    c = strict_app.test_client()
    resp = c.post("/signup", data={"agency_name": "X", "email": "csrf@example.com"})
    assert resp.status_code == 400
    token = _csrf(c.get("/signup").data)
    resp = c.post("/signup", data={"agency_name": "X", "email": "csrf@example.com", "csrf_token": token})
    assert resp.status_code == 200 and b"Check your email" in resp.data
    resp = c.post("/login", data={"email": ag.email, "password": ag.password,
                                  "csrf_token": _csrf(c.get("/login").data)})
    assert resp.status_code == 302
    # logged in: POST buttons need the token too
    assert c.post("/logout").status_code == 400
    page = c.get("/locks/").data
    assert c.post("/logout", data={"csrf_token": _csrf(page)}).status_code == 302


def test_session_cookie_flags(strict_app, make_agency):
    ag = make_agency()
    c = strict_app.test_client()
    resp = c.post("/login", data={"email": ag.email, "password": ag.password,
                                  "csrf_token": _csrf(c.get("/login").data)})
    cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" in cookie


def test_login_signup_and_token_are_rate_limited(strict_app):
    # (a POST without a valid CSRF token is refused before any password check, so the limit counts real tries)
    c = strict_app.test_client()
    token = _csrf(c.get("/login").data)
    codes = [c.post("/login", data={"email": "a@example.com", "password": "x", "csrf_token": token}).status_code
             for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    codes = [c.post("/api/v1/tokens", auth=("a@example.com", "x")).status_code for _ in range(4)]
    assert codes == [401, 401, 401, 429] and c.post("/api/v1/tokens", auth=("a", "b")).get_json()["message"]
    codes = [c.post("/signup", data={"csrf_token": token}).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    assert c.get("/login").status_code == 200  # GETs are not limited


def test_passwords_hashed_with_scrypt(app, make_agency):
    ag = make_agency(password="my secret passphrase")
    with app.app_context():
        user = db.session.get(User, ag.owner_id)
        assert user.password_hash.startswith("scrypt:") and "my secret passphrase" not in user.password_hash


def test_secrets_never_in_logs_or_pages(app, client, make_agency, make_lock, api_token, login, caplog):
    caplog.set_level(logging.DEBUG)
    ag = make_agency()
    t = api_token(ag)
    lock_id = make_lock(ag, active=False)
    body = client.post(f"/api/v1/locks/{lock_id}/provision", headers={"Authorization": f"Bearer {t}"}).get_json()
    with app.app_context():
        lock = db.session.get(Lock, lock_id)
        from cloud import domain
        domain.lock_hello(lock, firmware="1", boot_count=1, lock_time=None, revision=0)
    login(client, ag)
    pages = b"".join(client.get(u).data for u in ["/locks/", f"/locks/{lock_id}", "/codes/",
                                                   "/codes/export.csv"]).decode()
    pages += str(client.get(f"/api/v1/locks/{lock_id}", headers={"Authorization": f"Bearer {t}"}).get_json())
    for secret in (body["secret"], body["mqtt"]["password"], body["backup_digest"]):
        assert secret not in caplog.text and secret not in pages
    assert t not in caplog.text


def test_cli_agency_create(app):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["agency", "create", "--name", "Ops", "--email", "ops@example.com",
                                 "--password", "operator pass"])
    assert result.exit_code == 0 and result.output.strip().isdigit()
    result = runner.invoke(args=["agency", "create", "--name", "Ops", "--email", "OPS@example.com",
                                 "--password", "operator pass"])
    assert result.exit_code == 1 and "already exists" in result.output and "Traceback" not in result.output


def test_migrations_match_models(db_url, tmp_path):
    """`flask db upgrade` on an empty database gives the same tables, columns and indexes as the models."""
    from flask_migrate import upgrade
    if db_url.startswith("sqlite"):
        url = f"sqlite:///{tmp_path / 'migrated.sqlite3'}"
    else:
        url = db_url
    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "TESTING": True})
    with app.app_context():
        if not url.startswith("sqlite"):
            db.drop_all()
            with db.engine.begin() as conn:
                conn.execute(sa.text("DROP TABLE IF EXISTS alembic_version"))
        upgrade()
        insp = sa.inspect(db.engine)
        tables = set(insp.get_table_names()) - {"alembic_version"}
        assert tables == set(db.metadata.tables)
        for name, table in db.metadata.tables.items():
            cols = {c["name"]: c for c in insp.get_columns(name)}
            assert set(cols) == set(table.columns.keys()), name
            for col in table.columns:
                assert cols[col.name]["nullable"] == col.nullable, (name, col.name)
            idx = {i["name"] for i in insp.get_indexes(name) if not i.get("duplicates_constraint")}
            assert idx == {i.name for i in table.indexes}, name
        from alembic.autogenerate import compare_metadata
        from alembic.migration import MigrationContext
        with db.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), db.metadata)
        assert diff == []
        if not url.startswith("sqlite"):  # leave the shared PG database as the other tests expect it
            with db.engine.begin() as conn:
                conn.execute(sa.text("DROP TABLE IF EXISTS alembic_version"))
        db.engine.dispose()
