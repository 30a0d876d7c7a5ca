"""The development mailbox blueprint (cloud/devmail) against a real SMTP sink (aiosmtpd Maildir handler)."""
import smtplib
import socket
from email.message import EmailMessage

import pytest
from flask import Flask

from cloud import devmail

aiosmtpd_controller = pytest.importorskip("aiosmtpd.controller")
from aiosmtpd.handlers import Mailbox  # noqa: E402


@pytest.fixture
def sink(tmp_path):
    folder = tmp_path / "maildir"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctl = aiosmtpd_controller.Controller(Mailbox(str(folder)), hostname="127.0.0.1", port=port)
    ctl.start()
    yield folder, port
    ctl.stop()


def make_app(folder):
    app = Flask("t")
    app.config.update(DEV_MAILBOX_DIR=str(folder), TESTING=True)
    assert devmail.init_app(app)
    return app


def send(port, subject, text, html=None, to="owner@agency.test"):
    m = EmailMessage()
    m["From"] = "KeyDrop <no-reply@keydrop.localhost>"
    m["To"] = to
    m["Subject"] = subject
    m.set_content(text)
    if html:
        m.add_alternative(html, subtype="html")
    with smtplib.SMTP("127.0.0.1", port) as s:
        s.send_message(m)


def test_not_registered_without_config(monkeypatch):
    monkeypatch.delenv("DEV_MAILBOX_DIR", raising=False)
    app = Flask("t")
    assert devmail.init_app(app) is False
    assert app.test_client().get("/dev/mailbox/").status_code == 404


def test_lists_and_shows_mails(sink):
    folder, port = sink
    client = make_app(folder).test_client()
    r = client.get("/dev/mailbox/")
    assert r.status_code == 200 and b"No mail yet" in r.data
    send(port, "Your code for Flat 3", "Code: 4821\nValid from Monday.",
         "<p>Code: <b>4821</b></p><script>alert(1)</script>")
    send(port, "Second <mail>", "plain only")
    r = client.get("/dev/mailbox/")
    page = r.get_data(as_text=True)
    assert "Your code for Flat 3" in page and "Second &lt;mail&gt;" in page
    assert "owner@agency.test" in page
    assert page.index("Second") < page.index("Your code")  # newest first
    key = page.split('href="/dev/mailbox/')[2].split('"')[0]  # the second row: the older mail
    r = client.get("/dev/mailbox/" + key)
    assert r.status_code == 200
    page = r.get_data(as_text=True)
    assert "Code: 4821" in page
    assert 'sandbox=""' in page
    assert "<script>" not in page  # the HTML body is only inside the escaped srcdoc attribute
    assert "&lt;script&gt;" in page
    assert r.headers["Cache-Control"] == "no-store"


def test_unknown_or_bad_key_is_404(sink):
    folder, _ = sink
    client = make_app(folder).test_client()
    assert client.get("/dev/mailbox/nope").status_code == 404
    assert client.get("/dev/mailbox/..%2fx").status_code == 404


def test_empty_folder_before_the_first_mail(tmp_path):
    folder = tmp_path / "maildir"
    folder.mkdir()  # created by the dev stack, not yet a Maildir
    r = make_app(folder).test_client().get("/dev/mailbox/")
    assert r.status_code == 200 and b"No mail yet" in r.data
