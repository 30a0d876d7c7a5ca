"""Every page of the site in real headless Chromium, on a phone (390x844), a tablet (768x1024: the tables switch
layout at 760 px) and a desktop (1280x800): it loads, nothing scrolls sideways, the browser reports no
Content-Security-Policy violation, and axe-core finds no serious or critical accessibility problem. Pages
that only exist as the answer to a form (a revealed backup key, a new token, a new code with its warning…)
are reached by filling and sending that form. KEYDROP_SCREENSHOTS=1 also writes docs/screenshots/*.png; KEYDROP_AXE_REPORT=<file> writes every page's axe
findings of any impact as JSON."""
import json
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
TABLET = {"width": 768, "height": 1024}
DESKTOP = {"width": 1280, "height": 800}
UTC = timezone.utc
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def _seed(app, make_agency, make_lock):
    """An agency as a phone user meets it: long names, accents, several locks in every state, codes, a log."""
    ag = make_agency(name="Appartements Éloïse & Fils — Côte d'Azur", email="eloise@agence.example.com",
                     password="un mot de passe solide")
    main = make_lock(ag, name="Rue de la République, 3e étage gauche", address="27 rue de la République, 06000 Nice",
                     timezone="Europe/Paris", mac="24a160000101")
    registered = make_lock(ag, active=False, name="Villa Beau-Rivage (pas encore installée)",
                           address="1 chemin des Pins, Antibes", mac="24a160000102")
    offline = make_lock(ag, name="Studio Garibaldi", address="3 place Garibaldi, Nice", mac="24a160000103")
    retired = make_lock(ag, name="Ancien studio", address="8 rue Droite, Nice", mac="24a160000104")
    now = datetime.now(UTC).replace(microsecond=0)
    with app.app_context():
        owner = db.session.get(User, ag.owner_id)
        invited = invite_staff(owner, email="camille.longue-adresse@agence.example.com", name="Camille", role="staff")
        staff = invite_staff(owner, email="dominique@agence.example.com", name="Dominique", role="staff")
        staff.set_password(STAFF_PASSWORD)
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
        db.session.commit()
        from cloud.auth import _serializer, password_token
        from cloud.guest import guest_link
        with app.test_request_context():
            guest = guest_link(codes[0]).split("keydrop.example.com", 1)[1]
            guest_en = guest_link(codes[1]).split("keydrop.example.com", 1)[1]
        signup = _serializer("keydrop-signup").dumps({"name": "Conciergerie du Vieux-Port",
                                                      "email": "nouvelle.agence@example.com"})
        tokens = {"signup": signup, "reset": password_token(owner), "invite": password_token(invited)}
    app.config["CALENDAR_ALLOW_PRIVATE_HOSTS"] = True  # the webhook added below points at this machine
    return ag, {"main": main, "offline": offline, "retired": archived, "guest": guest, "guest_en": guest_en,
                "code": second_code, "registered": registered, **tokens}


STAFF_PASSWORD = "le mot de passe de Dominique"


def _submit(page, button: str):
    """Click the main form's `button` and answer its confirmation; the response of the page it leads to."""
    page.once("dialog", lambda d: d.accept())
    with page.expect_navigation() as nav:
        page.locator("main").get_by_role("button", name=button).first.click()
    return nav.value


def _signup(page):
    page.fill("#agency_name", "Gîtes du Lubéron")
    page.fill("#email", "gites@example.com")
    return _submit(page, "Continue")


def _token(page):
    page.fill("#label", "Logiciel de réservation")
    return _submit(page, "Create a token")


def _webhook(page):
    page.fill("#url", "http://127.0.0.1:9/keydrop-webhook")
    return _submit(page, "Add")


def _pages(ids):
    """(name for the screenshot or None, path, who: None | "owner" | "staff", form to send or None, status)."""
    m, o = ids["main"], ids["offline"]
    reveal = lambda page: _submit(page, "Reveal the backup key")  # noqa: E731
    new_code = lambda page: _submit(page, "Generate the code")  # noqa: E731
    return [
        ("login", "/login", None, None, 200), ("signup", "/signup", None, None, 200),
        ("signup-sent", "/signup", None, _signup, 200), (None, "/password/forgot", None, None, 200),
        ("signup-confirm", f"/signup/confirm/{ids['signup']}", None, None, 200),
        (None, f"/password/reset/{ids['reset']}", None, None, 200),
        ("invitation", f"/password/reset/{ids['invite']}", None, None, 200),
        ("guest-fr", ids["guest"], None, None, 200), ("guest-en", ids["guest_en"], None, None, 200),
        ("locks", "/locks/", "owner", None, 200), (None, "/locks/new", "owner", None, 200),
        ("lock", f"/locks/{m}", "owner", None, 200),
        ("lock-backup-key", f"/locks/{m}", "owner", reveal, 200),
        ("lock-registered", f"/locks/{ids['registered']}", "owner", None, 200),
        (None, f"/locks/{m}/edit", "owner", None, 200), ("calendar", f"/locks/{m}/calendar", "owner", None, 200),
        ("new-code-offline", f"/locks/{o}/codes/new", "owner", None, 200),
        (None, f"/locks/{m}/codes/new", "owner", None, 200),
        ("new-code-overlap", f"/locks/{m}/codes/new", "owner", new_code, 200),
        ("history", "/codes/", "owner", None, 200),
        (None, "/codes/?since=2030-05-10&until=2030-05-01", "owner", None, 400),
        (None, f"/locks/{ids['retired']}", "owner", None, 200), ("staff", "/staff", "owner", None, 200),
        ("account", "/account", "owner", None, 200), ("account-new-token", "/account", "owner", _token, 200),
        ("arrivals", "/arrivals", "owner", None, 200), ("feed", f"/locks/{m}/feed", "owner", None, 200),
        (None, f"/codes/{ids['code']}/guest", "owner", None, 200),
        ("alerts", "/settings/alerts", "owner", None, 200), ("webhooks", "/settings/webhooks", "owner", None, 200),
        ("webhook-secret", "/settings/webhooks", "owner", _webhook, 201),
        (None, "/no-such-page", "owner", None, 404),
        ("forbidden", "/staff", "staff", None, 403),
    ]


# what each page must show, so that a form that failed (and left the page as it was) is noticed
SHOWS = {"signup-sent": "gites@example.com", "lock-backup-key": 'id="backup-key"', "new-code-overlap": "overlaps code",
         "account-new-token": "kd_", "webhook-secret": 'id="new-secret"',
         "signup-confirm": "Conciergerie du Vieux-Port", "invitation": "camille.longue-adresse@agence.example.com",
         "forbidden": "403"}


def _log_in(page, email, password):
    page.goto("/login")
    page.fill("#email", email)
    page.fill("#password", password)
    page.click("main button[type=submit]")
    page.wait_for_url("**/locks/")


def test_every_page_on_a_phone_a_tablet_and_a_desktop(app, make_agency, make_lock, new_context, axe):
    ag, ids = _seed(app, make_agency, make_lock)
    shots = bool(os.environ.get("KEYDROP_SCREENSHOTS"))
    problems, report = [], {}
    for label, viewport in (("phone", PHONE), ("tablet", TABLET), ("desktop", DESKTOP)):
        ctx = new_context(viewport=viewport, is_mobile=label != "desktop", has_touch=label != "desktop")
        page = ctx.new_page()
        csp = []
        page.on("console", lambda m: csp.append(m.text) if "Content Security Policy" in m.text else None)
        who = None
        for name, path, needs, action, expected in _pages(ids):
            if needs != who:
                if who is not None:
                    ctx.clear_cookies()
                if needs == "owner":
                    _log_in(page, ag.email, ag.password)
                elif needs == "staff":
                    _log_in(page, "dominique@agence.example.com", STAFF_PASSWORD)
                who = needs
            resp = page.goto(path)
            if action is not None:
                resp = action(page)
            where = f"{label} {name or path}"
            if resp.status != expected:
                problems.append(f"{where}: HTTP {resp.status}, expected {expected}")
            if name in SHOWS and SHOWS[name] not in page.content():
                problems.append(f"{where}: “{SHOWS[name]}” is not on the page")
            wide = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
            if wide[0] > min(wide[1], viewport["width"]):
                problems.append(f"{where}: {wide[0]} px wide in a {viewport['width']} px window")
            found = axe(page, impacts=("minor", "moderate", "serious", "critical"))
            report[f"{label} {name or path}"] = sorted(f"{v['impact']} {v['id']}" for v in found)
            for v in found:
                if v["impact"] in ("serious", "critical"):
                    problems.append(f"{where}: axe {v['impact']} {v['id']} ({v['help']}) at {v['nodes']}")
            if shots and name:
                SHOTS.mkdir(exist_ok=True)
                page.screenshot(path=str(SHOTS / f"{name}-{label}.png"), full_page=True)
        problems += [f"{label}: {m}" for m in csp]
    if os.environ.get("KEYDROP_AXE_REPORT"):  # every page's axe findings of any impact, for a report
        Path(os.environ["KEYDROP_AXE_REPORT"]).write_text(json.dumps(report, indent=1, ensure_ascii=False))
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
