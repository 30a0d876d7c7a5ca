"""The whole demo in headless Chromium, against `python -m tools.devstack`:
sign in with the demo login, see the lock active, generate a code, read it in the mail on the dev mailbox
page, type it on the simulated lock's keypad page (served by the firmware on the unix port) and see the
door open there."""
import os
import re
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tests.waiting import wait_until

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.slow]

@pytest.fixture
def shots(tmp_path, request):
    """Pages to photograph (screenshot + HTML in the test's tmp dir) if the test fails."""
    pages = []
    yield pages
    rep = getattr(request.node, "rep_call", None)  # set by the hook in conftest.py
    if rep is None or rep.failed:
        for i, p in enumerate(pages):
            try:
                p.screenshot(path=str(tmp_path / f"page{i}.png"), full_page=True)
                (tmp_path / f"page{i}.html").write_text(p.content())
            except Exception:  # noqa: BLE001 (best effort)
                pass


def test_demo_end_to_end(devstack, browser, shots):
    urls = devstack.urls
    if not urls.get("keypad"):
        pytest.fail("the dev stack started without a simulated lock:\n" + devstack.output())
    page = browser.new_page()
    page.set_default_timeout(15000)
    shots.append(page)

    # sign in with the demo login the stack printed
    page.goto(urls["web"])
    page.fill("input[name=email]", urls["login"]["email"])
    page.fill("input[name=password]", urls["login"]["password"])
    page.click("form:has(input[name=password]) button[type=submit]")
    page.wait_for_selector("table.locks")

    # the simulated lock comes online by itself (MQTT hello through the bridge)
    row = f"tr[data-lock='{urls['lock']}']"

    def active():
        page.reload()
        return page.locator(f"{row} .badge").inner_text().strip() == "active"
    wait_until(active, 90, "the simulated lock to be active", every=1)
    page.click(f"{row} a")
    page.wait_for_selector("h1 .badge.active")

    # generate a code valid now (times in the lock's zone)
    tz = ZoneInfo(page.locator("dl.facts dt:text('Time zone') + dd").inner_text().strip())
    now = datetime.now(tz)
    page.click("text=New code")
    page.fill("input[name=check_in]", (now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M"))
    page.fill("input[name=check_out]", (now + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M"))
    page.click("form:has(input[name=check_in]) button[type=submit]")
    code = page.locator("#new-code .code").inner_text().strip()
    assert re.fullmatch(r"\d{4}", code)

    # the mail reaches the SMTP sink; read it on the dev mailbox page
    def mail_listed():
        page.goto(urls["mailbox"])
        link = page.locator(f"#mails a:has-text('Code {code} for')")
        return link.count() > 0 and link
    wait_until(mail_listed, 30, "the code mail in the mailbox", every=0.5).first.click()
    text = page.locator("#text").inner_text()
    m = re.search(r"Code:\s+(\d{4})", text)
    assert m, text
    mailed = m.group(1)
    assert mailed == code

    # wait until the code set is on the lock (the lock acknowledged the revision)
    def on_lock():
        page.goto(urls["web"].rstrip("/") + f"/locks/{urls['lock']}")
        return "Up to date" in page.locator("#sync").inner_text()
    wait_until(on_lock, 60, "the new code to reach the lock", every=1)

    # type the code from the mail on the lock's own keypad page and see the door open
    pad = browser.new_page()
    pad.set_default_timeout(15000)
    shots.append(pad)
    pad.goto(urls["keypad"])
    assert pad.locator("#door").get_attribute("data-state") == "closed"
    for k in mailed + "#":
        pad.click("#key-hash" if k == "#" else f"#key-{k}")
    pad.wait_for_selector("#door[data-state=open]", timeout=20000)
    assert "Door open" in pad.locator("#door").inner_text()
    # and it closes again after the relay time
    pad.wait_for_selector("#door[data-state=closed]", timeout=30000)
    pad.close()
    page.close()
