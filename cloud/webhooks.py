"""Webhook endpoints and their delivery: each queued event (cloud/events.py) is POSTed, signed, through the
SSRF guard, with retries and backoff; the outbox worker (`flask --app cloud mailer`) runs deliver_pending().

Signature (docs/automation.md): header `KeyDrop-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret,
"<t>." + body)>`; receivers recompute it over the raw body and refuse a `t` more than 5 minutes from their clock.
`KeyDrop-Event-Id` is the same for every retry and endpoint: a receiver drops the duplicates with it.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from datetime import datetime, timedelta

import sqlalchemy as sa
from flask import current_app

from . import netguard, outbox
from .domain import DomainError
from .events import EVENT_TYPES
from .extensions import db
from .models import User, WebhookDelivery, WebhookEndpoint
from .timeutil import utcnow

log = logging.getLogger("keydrop.webhooks")

REPLAY_WINDOW_S = 300
MAX_ENDPOINTS = 10
SUBSCRIBABLE = ("*", "alert.*") + EVENT_TYPES


def signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(bytes.fromhex(secret), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: str, header: str, body: bytes, now: float | None = None) -> bool:
    """What a receiver does (and the tests' receiver): constant-time compare, replay window."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        t = int(fields["t"])
    except (ValueError, KeyError):
        return False
    if abs((now if now is not None else time.time()) - t) > REPLAY_WINDOW_S:
        return False
    return hmac.compare_digest(signature(secret, t, body), header)


def create_endpoint(user: User, *, url: str, events: list[str] | None) -> WebhookEndpoint:
    url = (url or "").strip()
    if len(url) > 2000:
        raise DomainError("The URL can have at most 2000 characters.")
    try:
        netguard.check_destination(url, allow_private=bool(current_app.config["CALENDAR_ALLOW_PRIVATE_HOSTS"]))
    except netguard.FetchError as exc:
        raise DomainError(str(exc)) from None
    chosen = list(dict.fromkeys(events or ["*"]))
    unknown = [e for e in chosen if e not in SUBSCRIBABLE]
    if unknown:
        raise DomainError(f"Unknown event type {', '.join(unknown)}; choose from {', '.join(SUBSCRIBABLE)}.")
    count = db.session.scalar(sa.select(sa.func.count(WebhookEndpoint.id))
                              .where(WebhookEndpoint.agency_id == user.agency_id)) or 0
    if count >= MAX_ENDPOINTS:
        raise DomainError(f"An agency can have at most {MAX_ENDPOINTS} webhook endpoints.")
    ep = WebhookEndpoint(agency_id=user.agency_id, url=url, secret=secrets.token_hex(32), events=chosen,
                         created_at=utcnow(), created_by_id=user.id)
    db.session.add(ep)
    db.session.commit()
    return ep


def delete_endpoint(ep: WebhookEndpoint) -> None:
    db.session.execute(sa.delete(WebhookDelivery).where(WebhookDelivery.endpoint_id == ep.id))
    db.session.delete(ep)
    db.session.commit()


def backoff_seconds(attempts: int) -> float:
    cfg = current_app.config
    return outbox.backoff(attempts, cfg["WEBHOOK_BACKOFF_BASE_S"], cfg["WEBHOOK_BACKOFF_MAX_S"])


def _post(row: WebhookDelivery, ep: WebhookEndpoint) -> tuple[int | None, str | None]:
    body = row.body.encode()
    headers = {"Content-Type": "application/json", "KeyDrop-Event-Id": row.event_id,
               "KeyDrop-Event-Type": row.event_type, "KeyDrop-Signature": signature(ep.secret, int(time.time()), body)}
    cfg = current_app.config
    try:
        resp = netguard.request("POST", ep.url, body=body, headers=headers, timeout=float(cfg["WEBHOOK_TIMEOUT_S"]),
                                max_bytes=64 * 1024, allow_private=bool(cfg["CALENDAR_ALLOW_PRIVATE_HOSTS"]),
                                follow_redirects=False, truncate=True)  # only the status counts
    except netguard.FetchError as exc:
        return None, str(exc)
    return resp.status, None if 200 <= resp.status < 300 else f"HTTP {resp.status}"


def deliver_pending(now: datetime | None = None, limit: int = 100) -> dict:
    """One pass over due deliveries. Returns counts {"sent", "retry", "failed", "deferred"}.

    The mail goes out in the same worker, just before: a receiver that swallows connections must not hold it up.
    So once an endpoint fails in a pass, its other due rows are not tried in that pass but moved to the failed
    row's next attempt (not counted as attempts), and the pass stops after WEBHOOK_PASS_BUDGET_S (what is left
    is still due at the next pass): a pass lasts at most the budget plus one WEBHOOK_TIMEOUT_S."""
    now = now or utcnow()
    counts = {"sent": 0, "retry": 0, "failed": 0, "deferred": 0}
    cfg = current_app.config
    deadline = time.monotonic() + float(cfg["WEBHOOK_PASS_BUDGET_S"])
    outbox.requeue_stale(WebhookDelivery, now, cfg["MAILER_STALE_SENDING_S"])
    due = db.session.scalars(sa.select(WebhookDelivery.id).where(
        WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now)
        .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id).limit(limit)).all()
    failing: dict[int, datetime] = {}  # endpoint id -> when its failed row is tried again
    for i, row_id in enumerate(due):
        if time.monotonic() >= deadline:
            log.warning("webhook pass stopped after %g s; %d due deliveries wait for the next pass",
                        float(cfg["WEBHOOK_PASS_BUDGET_S"]), len(due) - i)
            break
        row = db.session.get(WebhookDelivery, row_id)
        if row is None:
            continue
        if row.endpoint_id in failing:
            res = db.session.execute(sa.update(WebhookDelivery).where(
                WebhookDelivery.id == row_id, WebhookDelivery.status == "pending")
                .values(next_attempt_at=failing[row.endpoint_id]))
            db.session.commit()
            counts["deferred"] += res.rowcount
            continue
        if not outbox.claim(WebhookDelivery, row_id, now):
            continue
        db.session.refresh(row)
        ep = db.session.get(WebhookEndpoint, row.endpoint_id)
        status, error = _post(row, ep)
        row.last_status, row.last_error, row.claimed_at = status, error, None
        if error is None:
            row.status, row.delivered_at = "sent", utcnow()
            counts["sent"] += 1
        else:
            failing[ep.id] = now + timedelta(seconds=backoff_seconds(row.attempts))
            if row.attempts >= cfg["WEBHOOK_MAX_ATTEMPTS"]:
                row.status = "failed"
                counts["failed"] += 1
                log.error("webhook %s (%s) to endpoint %s failed for good: %s", row.id, row.event_type, ep.id, error)
            else:
                row.status = "pending"
                row.next_attempt_at = failing[ep.id]
                counts["retry"] += 1
                log.warning("webhook %s attempt %d failed (%s)", row.id, row.attempts, error)
        db.session.commit()
    return counts
