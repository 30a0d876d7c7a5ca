"""Events for integrators: emit() writes one webhook delivery per subscribed endpoint into the current
transaction (an outbox, delivered by cloud/webhooks.py), so an event exists iff the change that caused it commits."""
from __future__ import annotations

import json
import uuid

import sqlalchemy as sa

from .extensions import db
from .models import Code, WebhookDelivery, WebhookEndpoint
from .timeutil import utcnow

EVENT_TYPES = ("code.created", "code.moved", "code.on_lock", "code.revoked", "lock.online", "lock.offline",
               "access.opened", "alert.offline", "alert.online", "alert.backup_used", "alert.lockout",
               "alert.clock", "alert.not_ready")


def iso(dt) -> str | None:
    return dt.isoformat().replace("+00:00", "Z") if dt else None


def code_payload(code: Code) -> dict:
    """A code as events carry it: everything but the digits (a webhook receiver never needs them)."""
    return {"code_id": code.id, "lock_id": code.lock_id, "source": code.source,
            "reservation_uid": code.reservation_uid, "valid_from": iso(code.valid_from),
            "valid_until": iso(code.valid_until), "customer_name": code.customer_name,
            "revoked_at": iso(code.revoked_at), "on_lock_at": iso(code.on_lock_at)}


def emit(agency_id: int, event_type: str, data: dict) -> str | None:
    """Queue `event_type` for the agency's endpoints that want it; returns the event id (None if nobody)."""
    endpoints = [e for e in db.session.scalars(sa.select(WebhookEndpoint).where(
        WebhookEndpoint.agency_id == agency_id)) if e.wants(event_type)]
    if not endpoints:
        return None
    event_id = str(uuid.uuid4())
    now = utcnow()
    body = json.dumps({"id": event_id, "type": event_type, "created_at": iso(now), "agency_id": agency_id,
                       "data": data}, separators=(",", ":"), sort_keys=True)
    for ep in endpoints:
        db.session.add(WebhookDelivery(endpoint_id=ep.id, event_id=event_id, event_type=event_type, body=body,
                                       status="pending", attempts=0, next_attempt_at=now, created_at=now))
    return event_id
