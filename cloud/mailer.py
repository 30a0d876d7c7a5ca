"""Transactional outbox for email.

`enqueue()` adds an OutboxMail row to the *current* session, so the mail exists if and only if the
transaction that decided to send it commits. `run_pending()` (the `flask --app cloud mailer` worker)
delivers due rows through Flask-Mail with retries and exponential backoff.

Delivery guarantee, honestly: a worker claims a row with a conditional UPDATE (pending → sending) in its own
committed transaction, so two workers never send the same row. After SMTP accepts the message the row is
marked sent. If the worker dies between SMTP acceptance and that commit, the row stays "sending"; after
MAILER_STALE_SENDING_S it is put back to pending and sent again. So: exactly once in normal operation and
across SMTP outages, at least once if a worker crashes in that narrow window (duplicates possible, no loss).
"""
from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta

import sqlalchemy as sa
from flask import current_app, render_template
from flask_mail import Message

from . import outbox
from .extensions import db, mail
from .models import OutboxMail
from .timeutil import utcnow

log = logging.getLogger("keydrop.mailer")


def enqueue(recipient: str, template: str, subject: str, *, sender_name: str | None = None,
            reply_to: str | None = None, **context) -> OutboxMail:
    """Render email/<template>.txt and .html and queue them for `recipient` in the current transaction.
    sender_name / reply_to (see from_agency) make the mail come from an agency rather than from KeyDrop."""
    subject = _one_line(subject)[:200]  # user text (a multi-line address) must not break the header
    text = render_template(f"email/{template}.txt", **context)
    html = render_template(f"email/{template}.html", subject=subject, **context)
    row = OutboxMail(recipient=recipient, subject=subject, text_body=text, html_body=html, kind=template,
                     sender_name=_one_line(sender_name)[:120] or None if sender_name else None,
                     reply_to=reply_to, status="pending", attempts=0, next_attempt_at=utcnow(),
                     created_at=utcnow())
    db.session.add(row)
    return row


def from_agency(agency) -> dict:
    """enqueue() arguments for a mail sent on behalf of `agency`: its name as the sender's name, replies to
    its owner's address (the agency's contact address)."""
    return {"sender_name": agency.name, "reply_to": agency.owner.email}


def absolute_url(endpoint: str, **values) -> str:
    """A link for an email: PUBLIC_BASE_URL + the endpoint's path (mails are rendered outside any request)."""
    path = current_app.url_map.bind("localhost").build(endpoint, values)  # works in the bridge (no request)
    return current_app.config["PUBLIC_BASE_URL"].rstrip("/") + path


def _one_line(text: str | None) -> str:
    return " ".join((text or "").split())


def _sender(row: OutboxMail):
    """The From header: the configured sender, under the agency's name when the mail speaks for one."""
    from email.utils import parseaddr
    default = current_app.config["MAIL_DEFAULT_SENDER"]
    if not row.sender_name:
        return default
    address = parseaddr(default if isinstance(default, str) else default[1])[1]
    return (row.sender_name, address)


def backoff_seconds(attempts: int) -> float:
    cfg = current_app.config
    return outbox.backoff(attempts, cfg["MAILER_BACKOFF_BASE_S"], cfg["MAILER_BACKOFF_MAX_S"])


def run_pending(now: datetime | None = None, limit: int = 100) -> dict:
    """One pass over due mails. Returns counts {"sent", "retry", "failed"}."""
    now = now or utcnow()
    counts = {"sent": 0, "retry": 0, "failed": 0}
    outbox.requeue_stale(OutboxMail, now, current_app.config["MAILER_STALE_SENDING_S"])
    due = db.session.scalars(sa.select(OutboxMail.id)
                             .where(OutboxMail.status == "pending", OutboxMail.next_attempt_at <= now)
                             .order_by(OutboxMail.next_attempt_at, OutboxMail.id).limit(limit)).all()
    for row_id in due:
        if not outbox.claim(OutboxMail, row_id, now):
            continue  # another worker got it
        row = db.session.get(OutboxMail, row_id)
        msg = Message(subject=row.subject, recipients=[row.recipient], body=row.text_body, html=row.html_body,
                      sender=_sender(row), reply_to=row.reply_to)
        try:
            mail.send(msg)
        except Exception as exc:  # SMTP down, refused, timeout…
            error = f"{type(exc).__name__}: {exc}"[:500]
            if row.attempts >= current_app.config["MAILER_MAX_ATTEMPTS"]:
                row.status = "failed"
                counts["failed"] += 1
                log.error("mail %s to %s failed for good after %d attempts: %s",
                          row.id, row.recipient, row.attempts, error)
            else:
                row.status = "pending"
                row.next_attempt_at = now + timedelta(seconds=backoff_seconds(row.attempts))
                counts["retry"] += 1
                log.warning("mail %s attempt %d failed (%s); retry at %s", row.id, row.attempts, error,
                            row.next_attempt_at.isoformat())
            row.last_error = error
            row.claimed_at = None
            db.session.commit()
            continue
        row.status = "sent"
        row.sent_at = utcnow()
        row.last_error = None
        db.session.commit()
        counts["sent"] += 1
        log.info("mail %s (%s) sent to %s", row.id, row.kind, row.recipient)
    return counts


def run_forever(interval: float | None = None, stop=None) -> None:
    """The outbox worker: mail, and the webhook deliveries (cloud/webhooks.py), every `interval` s."""
    from .webhooks import deliver_pending
    interval = current_app.config["MAILER_POLL_INTERVAL"] if interval is None else interval

    def step():
        run_pending()
        deliver_pending()
    outbox.run_periodically(step, interval, log=log, what="mailer", stop=stop)
