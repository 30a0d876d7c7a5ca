"""The agency journey in real headless Chromium: sign up, register a lock, see it registered, (the bridge's
domain call makes it active), generate a code with a customer copy, see it in history, export CSV, revoke it;
both mails arrive at the SMTP server."""
import csv
import io
import re
from datetime import datetime, timedelta

import pytest

from cloud import domain
from cloud.extensions import db
from cloud.models import Lock

pytestmark = [pytest.mark.browser]


def test_agency_journey(app, page, smtp_server, deliver_mail, tmp_path):
    from playwright.sync_api import expect

    # sign up: the address is confirmed by a mail before the agency exists
    page.goto("/signup")
    page.fill("#agency_name", "Harbour Lets")
    page.fill("#email", "owner@harbour.example.com")
    page.click("main button[type=submit]")
    expect(page.locator("#signup-sent")).to_contain_text("owner@harbour.example.com")
    deliver_mail()
    [confirm] = smtp_server.to("owner@harbour.example.com")
    link = re.search(r"http://keydrop.example.com(/signup/confirm/\S+)", smtp_server.text(confirm)).group(1)
    page.goto(link)
    page.fill("#password", "a long passphrase")
    page.fill("#confirm", "a long passphrase")
    page.click("main button[type=submit]")
    expect(page.locator("header")).to_contain_text("Harbour Lets")

    # register a lock (dash form of the MAC)
    page.click("text=Register a lock")
    page.fill("#mac", "24-a1-60-54-ab-3c")
    page.fill("#name", "Quay Flat")
    page.fill("#address", "4 Quay Street, Bristol BS1 4DB")
    page.fill("#timezone", "Europe/London")
    page.click("main button[type=submit]")
    expect(page.locator("h1")).to_contain_text("Quay Flat")
    page.click("nav >> text=Locks")
    row = page.locator("tr[data-lock='24a16054ab3c']")
    expect(row).to_contain_text("registered")
    expect(row).to_contain_text("24:A1:60:54:AB:3C")
    expect(row.locator("text=New code")).to_have_count(0)

    # the bridge verifies the lock's first hello
    with app.app_context():
        domain.lock_hello(db.session.get(Lock, "24a16054ab3c"), firmware="1.0.3", boot_count=1,
                          lock_time=None, revision=0)
    page.reload()
    expect(row).to_contain_text("active")
    expect(row).to_contain_text("1.0.3")

    # generate a code with a customer copy
    row.locator("text=New code").click()
    start = (datetime.now() + timedelta(days=2)).replace(hour=15, minute=0)
    page.fill("#check_in", start.strftime("%Y-%m-%dT%H:%M"))
    page.fill("#check_out", (start + timedelta(days=3, hours=-4)).strftime("%Y-%m-%dT%H:%M"))
    page.fill("#customer_name", "Mary Anning")
    page.fill("#customer_email", "mary@example.com")
    page.click("main button[type=submit]")
    code = page.locator("#new-code .code").inner_text().strip()
    assert len(code) == 4 and code.isdigit()

    # history
    page.click("nav >> text=History")
    hist = page.locator("table.history tbody tr")
    expect(hist).to_have_count(1)
    expect(hist.first).to_contain_text(code)
    expect(hist.first).to_contain_text("Mary Anning")
    expect(hist.first).to_contain_text("scheduled")
    expect(hist.first).to_contain_text("waiting for the lock")
    expect(hist.first).to_contain_text("owner@harbour.example.com")

    # CSV export
    with page.expect_download() as dl:
        page.click("#export-csv")
    path = tmp_path / "codes.csv"
    dl.value.save_as(path)
    rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8-sig"))))
    assert [(r["code"], r["customer_name"], r["time_zone"]) for r in rows] == [(code, "Mary Anning", "Europe/London")]

    # revoke (confirm dialog)
    page.once("dialog", lambda d: d.accept())
    hist.first.locator("button:has-text('Revoke')").click()
    expect(page.locator(".flash")).to_contain_text("revoked")
    expect(page.locator("table.history tbody tr").first).to_contain_text("revoked")

    # mails: the owner's and the customer's copy (plus "lock online")
    deliver_mail()
    owner = [m for m in smtp_server.to("owner@harbour.example.com") if code in m["Subject"]]
    customer = smtp_server.to("mary@example.com")
    assert len(owner) == 1 and len(customer) == 1
    text = smtp_server.text(customer[0])
    assert code in text and "4 Quay Street" in text and "Europe/London" in text
    assert start.strftime("%Y-%m-%d 15:00") in text
