"""Every page of the site in real headless Chromium, on a phone (390x844) and a desktop (1280x800): it loads,
nothing scrolls sideways, the browser reports no Content-Security-Policy violation, and axe-core finds no
serious or critical accessibility problem. KEYDROP_SCREENSHOTS=1 also writes docs/screenshots/*.png."""
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from cloud import domain
from cloud.extensions import db
from cloud.models import Agency, BridgeLockState, Lock, User
from cloud.staff import invite_staff

pytestmark = [pytest.mark.browser]
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}
UTC = timezone.utc
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def _seed(app, make_agency, make_lock):
    """An agency as a phone user meets it: long names, accents, several locks in every state, codes, a log."""
    ag = make_agency(name="Appartements Éloïse & Fils — Côte d'Azur", email="eloise@agence.example.com",
                     password="un mot de passe solide")
    main = make_lock(ag, name="Rue de la République, 3e étage gauche", address="27 rue de la République, 06000 Nice",
                     timezone="Europe/Paris", mac="24a160000101")
    make_lock(ag, active=False, name="Villa Beau-Rivage (pas encore installée)", address="1 chemin des Pins, Antibes",
              mac="24a160000102")
    offline = make_lock(ag, name="Studio Garibaldi", address="3 place Garibaldi, Nice", mac="24a160000103")
    retired = make_lock(ag, name="Ancien studio", address="8 rue Droite, Nice", mac="24a160000104")
    now = datetime.now(UTC).replace(microsecond=0)
    with app.app_context():
        owner = db.session.get(User, ag.owner_id)
        invite_staff(owner, email="camille.longue-adresse@agence.example.com", name="Camille", role="staff")
        lock = db.session.get(Lock, main)
        codes = [domain.generate_code(lock, valid_from=now + timedelta(days=d), valid_until=now + timedelta(days=d + n),
                                      by=owner, customer_name=name, customer_email=email, locale=loc)
                 for d, n, name, email, loc in [(-1, 3, "Zoé Lefèvre-Delacroix", "zoe@example.com", "fr"),
                                                (4, 5, "Mary Anning", "mary@example.com", "en"),
                                                (6, 2, "", None, "en")]]
        domain.revoke_code(codes[2], by=owner)
        domain.record_events(lock, [
            {"seq": 1, "t": int(now.timestamp()) - 3600, "kind": "opened", "code_id": codes[0].id},
            {"seq": 2, "t": int(now.timestamp()) - 1800, "kind": "refused", "reason": "outside_window"},
            {"seq": 3, "t": None, "kind": "opened_backup"},
            {"seq": 4, "t": int(now.timestamp()) - 60, "kind": "lockout", "seconds": 30}])
        db.session.add(BridgeLockState(lock_id=offline, online=False, online_changed_at=now - timedelta(hours=2)))
        db.session.add(BridgeLockState(lock_id=main, online=True, online_changed_at=now - timedelta(days=1)))
        db.session.commit()
        archived = domain.decommission_lock(db.session.get(Lock, retired), by=owner).id
        second_code = codes[1].id
        from cloud.guest import guest_link
        with app.test_request_context():
            guest = guest_link(codes[0]).split("keydrop.example.com", 1)[1]
    return ag, {"main": main, "offline": offline, "retired": archived, "guest": guest, "code": second_code}


def _pages(ids):
    m, o = ids["main"], ids["offline"]
    return [  # (name for the screenshot or None, path, logged in)
        ("login", "/login", False), ("signup", "/signup", False), (None, "/password/forgot", False),
        ("guest-fr", ids["guest"], False),
        ("locks", "/locks/", True), (None, "/locks/new", True), ("lock", f"/locks/{m}", True),
        (None, f"/locks/{m}/edit", True), ("calendar", f"/locks/{m}/calendar", True),
        ("new-code-offline", f"/locks/{o}/codes/new", True), (None, f"/locks/{m}/codes/new", True),
        ("history", "/codes/", True), (None, "/codes/?since=2030-05-10&until=2030-05-01", True),
        (None, f"/locks/{ids['retired']}", True), ("staff", "/staff", True), ("account", "/account", True),
        ("arrivals", "/arrivals", True), ("feed", f"/locks/{m}/feed", True), (None, f"/codes/{ids['code']}/guest", True),
        ("alerts", "/settings/alerts", True), ("webhooks", "/settings/webhooks", True),
        (None, "/no-such-page", True),
    ]


def test_every_page_on_a_phone_and_a_desktop(app, make_agency, make_lock, new_context, axe):
    ag, ids = _seed(app, make_agency, make_lock)
    shots = bool(os.environ.get("KEYDROP_SCREENSHOTS"))
    problems = []
    for label, viewport in (("phone", PHONE), ("desktop", DESKTOP)):
        ctx = new_context(viewport=viewport, is_mobile=label == "phone", has_touch=label == "phone")
        page = ctx.new_page()
        csp = []
        page.on("console", lambda m: csp.append(m.text) if "Content Security Policy" in m.text else None)
        logged_in = False
        for name, path, needs_login in _pages(ids):
            if needs_login and not logged_in:
                page.goto("/login")
                page.fill("#email", ag.email)
                page.fill("#password", ag.password)
                page.click("main button[type=submit]")
                page.wait_for_url("**/locks/")
                logged_in = True
            resp = page.goto(path)
            expected = 404 if path == "/no-such-page" else 400 if "since=2030" in path else 200
            if resp.status != expected:
                problems.append(f"{label} {path}: HTTP {resp.status}")
            wide = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
            if wide[0] > wide[1]:
                problems.append(f"{label} {path}: {wide[0]} px wide in a {wide[1]} px window")
            for v in axe(page):
                problems.append(f"{label} {path}: axe {v['impact']} {v['id']} ({v['help']}) at {v['nodes']}")
            if shots and name:
                SHOTS.mkdir(exist_ok=True)
                page.screenshot(path=str(SHOTS / f"{name}-{label}.png"), full_page=True)
        problems += [f"{label}: {m}" for m in csp]
    assert not problems, "\n".join(problems)


def test_phone_user_can_revoke_and_reach_every_menu_entry(app, make_agency, make_lock, new_context):
    """On a phone the Revoke button and every menu entry are on screen and work (they were off-screen)."""
    from playwright.sync_api import expect
    ag, ids = _seed(app, make_agency, make_lock)
    page = new_context(viewport=PHONE, is_mobile=True, has_touch=True).new_page()
    page.goto("/login")
    page.fill("#email", ag.email)
    page.fill("#password", ag.password)
    page.click("main button[type=submit]")
    for entry in ("Locks", "History", "Arrivals", "Alerts", "Staff", "Account"):
        box = page.locator("header nav").get_by_role("link", name=entry).bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], entry
    logout = page.get_by_role("button", name="Log out").bounding_box()
    assert logout["x"] + logout["width"] <= PHONE["width"] and logout["height"] < 40  # one line, not wrapped
    page.goto("/codes/")
    revoke = page.locator("table.history").get_by_role("button", name="Revoke").first
    box = revoke.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
    page.once("dialog", lambda d: d.accept())
    revoke.tap()
    expect(page.locator(".flash").first).to_contain_text("revoked")
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Agency)) == 1
