"""Outbox delivery through a real SMTP server (aiosmtpd on loopback)."""
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa
from click.testing import CliRunner

from cloud.extensions import db
from cloud.models import OutboxMail

UTC = timezone.utc


def _iso(dt):
    return dt.isoformat()


def _make_code(client, token, lock_id, customer_email="guest@example.com"):
    now = datetime.now(UTC)
    resp = client.post(f"/api/v1/locks/{lock_id}/codes", headers={"Authorization": f"Bearer {token}"},
                       json={"valid_from": _iso(now), "valid_until": _iso(now + timedelta(days=3)),
                             "customer_name": "Grace", "customer_email": customer_email})
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()


def test_code_mails_arrive_text_and_html(app, client, smtp_server, make_agency, make_lock, api_token, deliver_mail):
    ag = make_agency()
    lock_id = make_lock(ag)
    code = _make_code(client, api_token(ag), lock_id)
    counts = deliver_mail()
    assert counts == {"sent": 3, "retry": 0, "failed": 0}  # lock online + owner copy + customer copy
    owner_mails = smtp_server.to(ag.email)
    assert sorted(m["Subject"] for m in owner_mails) == sorted([f"Code {code['code']} for Flat 3B", "Flat 3B is online"])
    guest = smtp_server.to("guest@example.com")
    assert len(guest) == 1
    assert guest[0]["Subject"] == "Your door code for 12 rue de la Paix, 75002 Paris"
    assert code["code"] in smtp_server.text(guest[0]) and code["code"] in smtp_server.html(guest[0])
    assert "Europe/Paris" in smtp_server.text(guest[0])
    assert deliver_mail() == {"sent": 0, "retry": 0, "failed": 0}


def test_smtp_down_then_back_delivers_exactly_once(app, client, smtp_server, make_agency, make_lock, api_token,
                                                  deliver_mail):
    ag = make_agency()
    lock_id = make_lock(ag)
    deliver_mail()  # the "lock online" mail
    smtp_server.messages.clear()
    smtp_server.stop()
    _make_code(client, api_token(ag), lock_id)
    now = datetime.now(UTC)
    assert deliver_mail(now) == {"sent": 0, "retry": 2, "failed": 0}
    with app.app_context():
        rows = db.session.scalars(sa.select(OutboxMail).where(OutboxMail.status == "pending")).all()
        assert len(rows) == 2 and all(r.attempts == 1 and r.last_error for r in rows)
        assert all(r.next_attempt_at >= now.replace(microsecond=0) + timedelta(seconds=5) for r in rows)
    # not due yet: nothing tried
    assert deliver_mail(now + timedelta(seconds=1)) == {"sent": 0, "retry": 0, "failed": 0}
    assert deliver_mail(now + timedelta(seconds=6)) == {"sent": 0, "retry": 2, "failed": 0}  # still down
    with app.app_context():
        due = db.session.scalar(sa.select(sa.func.min(OutboxMail.next_attempt_at)).where(OutboxMail.status == "pending"))
        assert due >= (now + timedelta(seconds=6)).replace(microsecond=0) + timedelta(seconds=10)  # doubled
    smtp_server.start()
    assert deliver_mail(now + timedelta(minutes=5)) == {"sent": 2, "retry": 0, "failed": 0}
    assert deliver_mail(now + timedelta(hours=5)) == {"sent": 0, "retry": 0, "failed": 0}
    assert len(smtp_server.to(ag.email)) == 1 and len(smtp_server.to("guest@example.com")) == 1
    assert len(smtp_server.messages) == 2


def test_gives_up_after_max_attempts(app, smtp_server, deliver_mail):
    from cloud.mailer import enqueue
    smtp_server.stop()
    with app.test_request_context():
        enqueue("x@example.com", "reset", "Reset", user=type("U", (), {"email": "x@example.com"}), link="http://l",
                minutes=60)
        db.session.commit()
    t = datetime.now(UTC)
    for _ in range(app.config["MAILER_MAX_ATTEMPTS"]):
        deliver_mail(t)
        t += timedelta(days=1)
    with app.app_context():
        row = db.session.scalar(sa.select(OutboxMail))
        assert row.status == "failed" and row.attempts == app.config["MAILER_MAX_ATTEMPTS"]


def test_claim_prevents_double_send(app, smtp_server, deliver_mail):
    """A row another worker already claimed (status sending) is not sent again; a stale claim is."""
    from cloud.mailer import enqueue
    with app.test_request_context():
        row = enqueue("y@example.com", "reset", "Reset", user=type("U", (), {"email": "y@example.com"}),
                      link="http://l", minutes=60)
        row.status, row.claimed_at = "sending", datetime.now(UTC)
        db.session.commit()
    assert deliver_mail()["sent"] == 0
    assert deliver_mail(datetime.now(UTC) + timedelta(hours=1))["sent"] == 1  # stale claim recovered


def test_mailer_cli_once(app, smtp_server, make_agency, make_lock):
    ag = make_agency()
    make_lock(ag)
    result = app.test_cli_runner().invoke(args=["mailer", "--once"])
    assert result.exit_code == 0 and "sent=1" in result.output
    assert len(smtp_server.to(ag.email)) == 1
