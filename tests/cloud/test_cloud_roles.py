"""Staff roles (cloud/auth/roles.py): what staff may not do, on the pages and the API; managing people."""
import re

import pytest
import sqlalchemy as sa

from cloud.extensions import db
from cloud.models import ApiToken, AuditEvent, User
from cloud.staff import invite_staff


def _member(app, ag, email, role, password="a fine staff passphrase"):
    """A joined member of `ag` with `role` (invited by the owner, password chosen)."""
    with app.app_context():
        user = invite_staff(db.session.get(User, ag.owner_id), email=email, role=role)
        user.set_password(password)
        db.session.commit()
        return type("Member", (), {"id": user.id, "email": email, "password": password})


def _login(client, who):
    resp = client.post("/login", data={"email": who.email, "password": who.password})
    assert resp.status_code == 302
    return client


def test_staff_cannot_reveal_keys_manage_staff_or_tokens(app, make_agency, make_lock):
    ag = make_agency()
    lock_id = make_lock(ag)
    staff = _login(app.test_client(), _member(app, ag, "s@example.com", "staff"))
    page = staff.get(f"/locks/{lock_id}").data.decode()
    assert "Reveal the backup key" not in page and "Only the owner and managers" in page
    assert staff.post(f"/locks/{lock_id}/backup-key").status_code == 403
    assert staff.get("/staff").status_code == 403
    assert staff.post("/staff", data={"email": "x@example.com"}).status_code == 403
    assert staff.post("/account/tokens", data={"label": "mine"}).status_code == 403
    assert "Staff</a>" not in staff.get("/locks/").data.decode()
    api = app.test_client().post("/api/v1/tokens", auth=("s@example.com", "a fine staff passphrase"))
    assert api.status_code == 403 and "role" in api.get_json()["message"]
    # what staff do every day still works
    assert staff.get(f"/locks/{lock_id}/codes/new").status_code == 200
    assert staff.get("/codes/").status_code == 200
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count(AuditEvent.id))) == 0
        assert db.session.scalar(sa.select(sa.func.count(ApiToken.id))) == 0


def test_manager_can_what_staff_cannot(app, make_agency, make_lock):
    ag = make_agency()
    lock_id = make_lock(ag)
    manager = _login(app.test_client(), _member(app, ag, "m@example.com", "manager"))
    assert manager.post(f"/locks/{lock_id}/backup-key").status_code == 302
    assert manager.get("/staff").status_code == 200
    assert manager.post("/staff", data={"email": "new@example.com", "role": "staff"}).status_code == 302
    assert app.test_client().post("/api/v1/tokens", auth=("m@example.com", "a fine staff passphrase")).status_code == 201


def test_roles_change_remove_and_resend(app, client, make_agency, login, smtp_server, deliver_mail):
    ag = make_agency()
    login(client, ag)
    assert client.post("/staff", data={"email": "helper@example.com", "name": "Helper", "role": "staff"}).status_code == 302
    with app.app_context():
        uid = db.session.scalar(sa.select(User.id).where(User.email == "helper@example.com"))
    assert "invitation sent" in client.get("/staff").data.decode()
    client.post(f"/staff/{uid}/resend")
    deliver_mail()
    mails = smtp_server.to("helper@example.com")
    assert len(mails) == 2 and all(ag.name in m["Subject"] for m in mails)
    link = re.search(r"(/password/reset/\S+)", smtp_server.text(mails[-1])).group(1)
    helper = app.test_client()
    assert helper.post(link, data={"password": "helper passphrase ok", "confirm": "helper passphrase ok"}).status_code == 302
    # promoted: can now open the staff page; demoted again: cannot, and their API tokens end with the role
    client.post(f"/staff/{uid}/role", data={"role": "manager"})
    assert helper.get("/staff").status_code == 200
    token = app.test_client().post("/api/v1/tokens", auth=("helper@example.com", "helper passphrase ok")).get_json()["token"]
    client.post(f"/staff/{uid}/role", data={"role": "staff"})
    assert helper.get("/staff").status_code == 403
    assert app.test_client().get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    # nobody can make someone owner, or change / remove the owner
    assert b"one owner" in client.post(f"/staff/{uid}/role", data={"role": "owner"}, follow_redirects=True).data
    client.post(f"/staff/{ag.owner_id}/remove")
    with app.app_context():
        assert db.session.get(User, ag.owner_id).removed_at is None
    # removed: the open session ends, logging in is refused, the page no longer lists them
    assert client.post(f"/staff/{uid}/remove").status_code == 302
    assert helper.get("/locks/").status_code == 302
    assert helper.post("/login", data={"email": "helper@example.com", "password": "helper passphrase ok"}).status_code == 200
    assert 'data-member="helper@example.com"' not in client.get("/staff").data.decode()
    # and can be invited back
    assert client.post("/staff", data={"email": "helper@example.com", "role": "staff"}).status_code == 302


def test_inviting_an_address_of_another_agency_answers_like_any_invitation(app, client, make_agency, login,
                                                                          smtp_server, deliver_mail):
    """Anyone can sign up, so the invite form must not tell whether an address has a KeyDrop account: the
    answer is the same as for a free address, the address's owner gets a notice, and nobody is added."""
    other = make_agency(name="Other Agency")
    mine = make_agency(name="Mine")
    login(client, mine)

    def invite(email):
        resp = client.post("/staff", data={"email": email, "role": "staff"}, follow_redirects=False)
        notice = client.get("/staff").data.decode()  # shows the flashed message once
        return resp.status_code, resp.headers.get("Location"), re.search(r'class="flash[^>]*>(.*?)<', notice, re.S)

    taken = invite(other.email.upper())
    free = invite("free@example.com")
    assert taken[:2] == free[:2] == (302, "/staff")
    assert taken[2].group(1).replace(other.email, "free@example.com") == free[2].group(1)
    assert "Invitation sent to" in free[2].group(1)
    page = client.get("/staff").data.decode()
    assert "another agency" not in page.split("Invite someone")[0]  # the list above says nothing of it
    with app.app_context():
        owner = db.session.get(User, other.owner_id)
        assert owner.agency_id == other.id and owner.role == "owner"  # nothing changed on the account
        assert [u.email for u in db.session.scalars(sa.select(User).where(User.agency_id == mine.id))] == [
            mine.email, "free@example.com"]  # no membership for the taken address
    deliver_mail()
    [notice] = smtp_server.to(other.email)
    text = smtp_server.text(notice)
    assert "Mine" in text and "already has a KeyDrop account with another agency" in text
    assert "/password/reset/" not in text  # a notice, not an invitation
    assert "another agency" in smtp_server.html(notice)
    assert notice["Reply-To"] == mine.email


def test_the_permission_table_is_the_only_source(app):
    from cloud.auth.roles import PERMISSIONS, can, permission_required
    staff = type("U", (), {"role": "staff"})
    assert not any(can(staff, p) for p in PERMISSIONS)
    assert can(type("U", (), {"role": "manager"}), "manage_webhooks")
    with pytest.raises(KeyError):
        permission_required("no_such_permission")


def test_a_staff_members_old_token_cannot_edit_or_provision(app, make_agency, make_lock):
    """Defence in depth: even a token that outlived a demotion (written straight to the database here) cannot
    edit a lock or fetch its secret."""
    ag = make_agency()
    lock_id = make_lock(ag)
    member = _member(app, ag, "old@example.com", "staff")
    with app.app_context():
        row, token = ApiToken.issue(db.session.get(User, member.id), label="left over")
        db.session.add(row)
        db.session.commit()
    api = app.test_client()
    auth = {"Authorization": f"Bearer {token}"}
    assert api.patch(f"/api/v1/locks/{lock_id}", json={"name": "X"}, headers=auth).status_code == 403
    assert api.post(f"/api/v1/locks/{lock_id}/provision", headers=auth).status_code == 403
    assert api.get(f"/api/v1/locks/{lock_id}", headers=auth).status_code == 200


def test_staff_cannot_manage_people_webhooks_alerts_or_others_tokens(app, make_agency):
    """Every managing action refused to a staff member, on the site (their session) and on the API (a token
    that outlived a demotion): 403, and nothing changed."""
    from cloud import webhooks
    from cloud.models import WebhookEndpoint
    ag = make_agency()
    staff_member = _member(app, ag, "s@example.com", "staff")
    manager = _member(app, ag, "m@example.com", "manager")
    app.config["CALENDAR_ALLOW_PRIVATE_HOSTS"] = True
    with app.app_context():
        owner = db.session.get(User, ag.owner_id)
        invited = invite_staff(owner, email="pending@example.com").id
        ep_id = webhooks.create_endpoint(owner, url="http://127.0.0.1:9/hook", events=None).id
        db.session.commit()
        mrow, _ = ApiToken.issue(db.session.get(User, manager.id), label="manager's")
        srow, stoken = ApiToken.issue(db.session.get(User, staff_member.id), label="left over")
        db.session.add_all([mrow, srow])
        db.session.commit()
        manager_token_id = mrow.id
        mails_before = db.session.scalar(sa.select(sa.func.count()).select_from(sa.text("outbox_mail")))
    staff = _login(app.test_client(), staff_member)
    for path, data in [(f"/staff/{manager.id}/role", {"role": "staff"}), (f"/staff/{manager.id}/remove", {}),
                       (f"/staff/{invited}/resend", {}),
                       ("/settings/webhooks", {"url": "http://127.0.0.1:9/other"}),
                       (f"/settings/webhooks/{ep_id}/delete", {}), ("/settings/alerts", {}),
                       (f"/account/tokens/{manager_token_id}/revoke", {})]:
        assert staff.post(path, data=data).status_code == 403, path
    assert staff.get("/settings/webhooks").status_code == 403
    api = app.test_client()
    auth = {"Authorization": f"Bearer {stoken}"}
    for method, path, body in [("get", "/api/v1/webhooks", None),
                               ("post", "/api/v1/webhooks", {"url": "http://127.0.0.1:9/other"}),
                               ("delete", f"/api/v1/webhooks/{ep_id}", None),
                               ("get", f"/api/v1/webhooks/{ep_id}/deliveries", None),
                               ("put", "/api/v1/alert-settings", {"on": []})]:
        resp = getattr(api, method)(path, json=body, headers=auth)
        assert resp.status_code == 403 and "role" in resp.get_json()["message"], (method, path)
    # and a manager cannot revoke someone else's token either: it is not theirs to see
    mgr = _login(app.test_client(), manager)
    with app.app_context():
        other_row, _ = ApiToken.issue(db.session.get(User, ag.owner_id), label="owner's")
        db.session.add(other_row)
        db.session.commit()
        owner_token_id = other_row.id
    assert mgr.post(f"/account/tokens/{owner_token_id}/revoke").status_code == 404
    with app.app_context():
        assert db.session.get(User, manager.id).role == "manager"
        assert db.session.get(User, manager.id).removed_at is None
        assert {t.id for t in db.session.scalars(sa.select(ApiToken))} >= {manager_token_id, owner_token_id}
        assert [e.id for e in db.session.scalars(sa.select(WebhookEndpoint))] == [ep_id]
        assert db.session.scalar(sa.select(sa.func.count()).select_from(sa.text("outbox_mail"))) == mails_before
        assert db.session.scalar(sa.select(sa.func.count(AuditEvent.id))) == 0
