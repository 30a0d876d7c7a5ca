"""JSON API /api/v1 for integrators and the installer tool. Bearer-token auth; errors are {"message": …}."""
from __future__ import annotations

import functools
from collections.abc import Container
from datetime import datetime

import sqlalchemy as sa
from email_validator import EmailNotValidError, validate_email
from flask import Blueprint, current_app, g, jsonify, request

from ..auth.passwords import verify
from ..auth.roles import FORBIDDEN_MESSAGE, can, permission_required
from ..domain import (DomainError, generate_code, provision, register_lock, revoke_code, set_guest,
                      update_lock)
from .. import alerts, readiness, webhooks
from ..extensions import db, limiter
from ..feeds import manage as feeds
from ..i18n import LOCALES
from ..firmware import rollout as fw_rollout
from ..models import ApiToken, Code, InvalidMac, Lock, User, WebhookDelivery, WebhookEndpoint
from ..scoping import (MAX_CODE_ID, BadFilter, agency_code_or_404, agency_lock_or_404, agency_locks,
                       code_history)
from ..timeutil import DEFAULT_TIMEZONE, UTC, fmt_clock, parse_clock, utcnow
from .openapi import spec

bp = Blueprint("api", __name__, url_prefix="/api/v1")

MAX_OFFSET = MAX_CODE_ID  # beyond it there is nothing to page through (and the databases cannot bind it)


class ApiError(Exception):
    def __init__(self, status: int, message: str, **extra):
        self.status, self.message, self.extra = status, message, extra


@bp.errorhandler(ApiError)
def _api_error(exc: ApiError):
    return jsonify(message=exc.message, **exc.extra), exc.status


@bp.errorhandler(DomainError)
def _domain_error(exc: DomainError):
    return jsonify(message=exc.message, **exc.extra), exc.status


# HTTP errors (404, 405, 413, 429…) are answered as {"message": …} by the app's handlers (cloud/__init__.py).


def token_required(view):
    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        row = None
        if scheme.lower() == "bearer" and token.strip():
            row = db.session.scalar(sa.select(ApiToken).where(ApiToken.token_hash == ApiToken.hash(token.strip())))
        if row is None or row.user.removed_at is not None:
            resp = jsonify(message="Missing or invalid API token (Authorization: Bearer <token>).")
            return resp, 401, {"WWW-Authenticate": 'Bearer realm="keydrop"'}
        g.user = row.user
        g.api_token = row
        now = utcnow()
        if row.last_used_at is None or (now - row.last_used_at).total_seconds() >= 60:
            row.last_used_at = now  # at most one write a minute per token: "last used" on the account page
            db.session.commit()
        return view(*args, **kwargs)
    return wrapped


def _body() -> dict:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise ApiError(400, "Send a JSON object (Content-Type: application/json).")
    return data


def _when(data: dict, key: str) -> datetime:
    raw = data.get(key)
    if not isinstance(raw, str):
        raise ApiError(400, f"{key} is required: an ISO 8601 date-time with offset, e.g. 2026-07-01T15:00:00+02:00.")
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise ApiError(400, f"{key} is not an ISO 8601 date-time.")
    if value.tzinfo is None:
        raise ApiError(400, f"{key} needs a UTC offset (e.g. +02:00 or Z).")
    try:
        return value.astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:00-05:00 is in the year 10000 in UTC
        raise ApiError(400, f"{key} is out of range.")


def _text(data: dict, key: str) -> str:
    """A string field of the body; absent or null is "" (the domain says what is missing)."""
    value = data.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ApiError(400, f"{key} must be a string.")
    return value


def _str_list(data: dict, key: str, message: str, among: Container[str] | None = None) -> list[str]:
    """A list of strings in the body, each one of `among` if given; anything else answers 400 with `message`."""
    value = data.get(key)
    if not isinstance(value, list) or not all(isinstance(v, str) and (among is None or v in among) for v in value):
        raise ApiError(400, message)
    return value


def _iso(dt: datetime | None) -> str | None:
    return dt.isoformat().replace("+00:00", "Z") if dt else None


def lock_json(lock: Lock) -> dict:
    return {"id": lock.id, "mac": lock.mac_display, "name": lock.name, "address": lock.address,
            "timezone": lock.timezone, "checkin_time": fmt_clock(lock.checkin_time),
            "checkout_time": fmt_clock(lock.checkout_time), "status": lock.status, "registered_at": _iso(lock.registered_at),
            "activated_at": _iso(lock.activated_at), "last_seen_at": _iso(lock.last_seen_at),
            "firmware_version": lock.firmware_version, "desired_revision": lock.desired_revision,
            "acked_revision": lock.acked_revision,
            "online": lock.online, "online_changed_at": _iso(lock.online_changed_at),
            "firmware": fw_rollout.lock_json(lock.id, lock.firmware_version)["firmware"],
            "health": dict(lock.health, at=_iso(lock.health_at)) if lock.health else None}


def code_json(code: Code, now: datetime | None = None) -> dict:
    return {"id": code.id, "lock_id": code.lock_id, "code": code.code, "status": code.status(now or utcnow()),
            "on_lock": code.on_lock, "on_lock_at": _iso(code.on_lock_at),
            "valid_from": _iso(code.valid_from), "valid_until": _iso(code.valid_until),
            "customer_name": code.customer_name, "customer_email": code.customer_email,
            "created_by": code.created_by.email if code.created_by else None, "created_at": _iso(code.created_at),
            "revoked_at": _iso(code.revoked_at), "removed_at": _iso(code.removed_at), "locale": code.locale,
            "source": code.source, "reservation_uid": code.reservation_uid}


@bp.get("/openapi.json")
def openapi():
    return jsonify(spec())


def _token_limit() -> str:
    return current_app.config["LOGIN_RATE_LIMIT"]


@bp.post("/tokens")
@limiter.limit(_token_limit)
def tokens():
    auth = request.authorization
    if auth is None or auth.type != "basic" or not auth.username:
        return jsonify(message="Use HTTP Basic auth with your email and password."), 401, \
            {"WWW-Authenticate": 'Basic realm="keydrop"'}
    user = db.session.scalar(sa.select(User).where(User.email == User.normalize_email(auth.username)))
    if not verify(user, auth.password or ""):
        return jsonify(message="Wrong email or password."), 401, {"WWW-Authenticate": 'Basic realm="keydrop"'}
    if not can(user, "manage_tokens"):
        return jsonify(message=FORBIDDEN_MESSAGE), 403
    body = request.get_json(silent=True)
    label = body.get("label") if isinstance(body, dict) else None
    if label is not None and (not isinstance(label, str) or len(label) > 80):
        raise ApiError(400, "label must be a string of at most 80 characters.")
    row, token = ApiToken.issue(user, label=(label or "").strip() or "API")
    db.session.add(row)
    db.session.commit()
    return jsonify(token=token), 201


@bp.get("/me")
@token_required
def me():
    return jsonify(email=g.user.email, role=g.user.role, agency={"id": g.user.agency_id, "name": g.user.agency.name})


@bp.get("/locks")
@token_required
def list_locks():
    locks = db.session.scalars(agency_locks(g.user.agency_id, with_connection=True)
                               .order_by(Lock.name, Lock.id)).all()
    return jsonify(locks=[lock_json(lk) for lk in locks])


@bp.post("/locks")
@token_required
def create_lock():
    data = _body()
    try:
        lock = register_lock(g.user.agency, mac=_text(data, "mac"), name=_text(data, "name"),
                             address=_text(data, "address"),
                             timezone=_text(data, "timezone").strip() or DEFAULT_TIMEZONE, by=g.user)
    except InvalidMac as exc:
        raise ApiError(400, str(exc))
    return jsonify(lock_json(lock)), 201, {"Location": f"/api/v1/locks/{lock.id}"}


@bp.get("/locks/<lock_id>")
@token_required
def get_lock(lock_id: str):
    return jsonify(lock_json(agency_lock_or_404(g.user.agency_id, lock_id)))


LOCK_EDITABLE = ("name", "address", "timezone", "checkin_time", "checkout_time")


@bp.patch("/locks/<lock_id>")
@token_required
@permission_required("manage_locks")
def patch_lock(lock_id: str):
    lock = agency_lock_or_404(g.user.agency_id, lock_id)
    data = _body()
    unknown = sorted(set(data) - set(LOCK_EDITABLE))
    if unknown:
        raise ApiError(400, f"Cannot change {', '.join(unknown)}; editable fields: {', '.join(LOCK_EDITABLE)}.")
    fields: dict = {}
    for key in LOCK_EDITABLE:
        if key not in data or data[key] is None:
            continue
        if not isinstance(data[key], str):
            raise ApiError(400, f"{key} must be a string.")
        if key.endswith("_time"):
            try:
                fields[key] = parse_clock(data[key])
            except ValueError as exc:
                raise ApiError(400, f"{key}: {exc}")
        else:
            fields[key] = data[key]
    return jsonify(lock_json(update_lock(lock, **fields)))


@bp.post("/locks/<lock_id>/provision")
@token_required
@permission_required("manage_locks")  # hands out the lock's secret
def provision_lock(lock_id: str):
    lock = agency_lock_or_404(g.user.agency_id, lock_id)
    body = provision(lock, by=g.user, config=current_app.config, remote_addr=request.remote_addr)
    return jsonify(body), 200, {"Cache-Control": "no-store"}


@bp.post("/locks/<lock_id>/codes")
@token_required
def create_code(lock_id: str):
    lock = agency_lock_or_404(g.user.agency_id, lock_id)
    data = _body()
    email = _text(data, "customer_email").strip() or None
    if email is not None:
        try:
            email = validate_email(email, check_deliverability=False).normalized
        except EmailNotValidError as exc:
            raise ApiError(400, f"customer_email: {exc}")
    name = data.get("customer_name")
    if name is not None and (not isinstance(name, str) or len(name) > 120):
        raise ApiError(400, "customer_name must be a string of at most 120 characters.")
    locale = _text(data, "locale") or "en"
    if locale not in LOCALES:
        raise ApiError(400, f"locale is one of {', '.join(LOCALES)}.")
    code = generate_code(lock, valid_from=_when(data, "valid_from"), valid_until=_when(data, "valid_until"),
                         by=g.user, customer_name=name, customer_email=email, locale=locale)
    return jsonify(code_json(code)), 201, {"Location": f"/api/v1/codes/{code.id}"}


def feed_json(feed) -> dict:
    return {"lock_id": feed.lock_id, "url": feed.url, "created_at": _iso(feed.created_at),
            "last_attempt_at": _iso(feed.last_attempt_at), "last_sync_at": _iso(feed.last_sync_at),
            "last_error": feed.last_error, "events_seen": feed.events_seen,
            "reservations_seen": feed.reservations_seen,
            "codes": len(feeds.calendar_codes(feed.lock))}


def _feed_or_404(lock):
    feed = feeds.feed_of(lock)
    if feed is None:
        raise ApiError(404, "This lock has no reservation feed.")
    return feed


@bp.get("/locks/<lock_id>/calendar")
@token_required
def get_calendar(lock_id: str):
    return jsonify(feed_json(_feed_or_404(agency_lock_or_404(g.user.agency_id, lock_id))))


@bp.put("/locks/<lock_id>/calendar")
@token_required
def put_calendar(lock_id: str):
    lock = agency_lock_or_404(g.user.agency_id, lock_id)
    data = _body()
    if not isinstance(data.get("url"), str):
        raise ApiError(400, "url is required: the feed's iCal address (https://…).")
    existed = feeds.feed_of(lock) is not None
    feed = feeds.set_feed(lock, data["url"], by=g.user)
    return jsonify(feed_json(feed)), 200 if existed else 201


@bp.delete("/locks/<lock_id>/calendar")
@token_required
def delete_calendar(lock_id: str):
    lock = agency_lock_or_404(g.user.agency_id, lock_id)
    _feed_or_404(lock)
    feeds.remove_feed(lock, by=g.user)
    return "", 204


@bp.get("/codes")
@token_required
def list_codes():
    now = utcnow()
    try:
        q = code_history(g.user.agency_id, lock_id=request.args.get("lock_id", ""),
                         status=request.args.get("status", ""), customer=request.args.get("customer", "").strip(),
                         since=request.args.get("since", "").strip(), until=request.args.get("until", "").strip(),
                         now=now, labels=("since", "until"))
    except BadFilter as exc:
        raise ApiError(400, str(exc))
    try:
        limit = min(max(int(request.args.get("limit", 100)), 1), 1000)
        offset = max(int(request.args.get("offset", 0)), 0)
    except ValueError:
        raise ApiError(400, "limit and offset are integers.")
    if offset > MAX_OFFSET:
        raise ApiError(400, f"offset is at most {MAX_OFFSET}.")
    codes = db.session.scalars(q.order_by(Code.id.desc()).limit(limit).offset(offset)).all()
    return jsonify(codes=[code_json(c, now) for c in codes])


@bp.get("/codes/<int:code_id>")
@token_required
def get_code(code_id: int):
    return jsonify(code_json(agency_code_or_404(g.user.agency_id, code_id)))


@bp.patch("/codes/<int:code_id>")
@token_required
def patch_code(code_id: int):
    """Add or correct the guest of a code; {"send_guest_copy": true} (the default) emails them their code."""
    code = agency_code_or_404(g.user.agency_id, code_id)
    data = _body()
    unknown = sorted(set(data) - {"customer_email", "customer_name", "send_guest_copy"})
    if unknown:
        raise ApiError(400, f"Cannot change {', '.join(unknown)}; editable: customer_email, customer_name.")
    email = _text(data, "customer_email").strip() if "customer_email" in data else None
    if email:
        try:
            email = validate_email(email, check_deliverability=False).normalized
        except EmailNotValidError as exc:
            raise ApiError(400, f"customer_email: {exc}")
    name = _text(data, "customer_name") if "customer_name" in data else None
    if name is not None and len(name) > 120:
        raise ApiError(400, "customer_name must be a string of at most 120 characters.")
    send = data.get("send_guest_copy", True)
    if not isinstance(send, bool):
        raise ApiError(400, "send_guest_copy is true or false.")
    return jsonify(code_json(set_guest(code, email=email, name=name, send=send and bool(email))))


@bp.delete("/codes/<int:code_id>")
@token_required
def delete_code(code_id: int):
    code = revoke_code(agency_code_or_404(g.user.agency_id, code_id), by=g.user)
    return jsonify(code_json(code))


# ---------------------------------------------------------------- automation: arrivals, webhooks, alert settings


def readiness_json(r) -> dict:
    code = r.code
    return {"code_id": code.id, "lock_id": code.lock_id, "lock_name": code.lock.name,
            "valid_from": _iso(code.valid_from), "valid_until": _iso(code.valid_until),
            "customer_name": code.customer_name, "source": code.source, "ready": r.ready,
            "checks": {"code_on_lock": r.on_lock, "lock_seen_recently": r.seen_recently, "clock_ok": r.clock_ok,
                       "backup_rotation_pending": r.rotation_pending},
            "problems": r.problems, "advice": r.advice}


@bp.get("/arrivals")
@token_required
def arrivals():
    return jsonify(arrivals=[readiness_json(r) for r in readiness.upcoming(g.user.agency_id)])


def _webhook_json(ep, secret: bool = False) -> dict:
    body = {"id": ep.id, "url": ep.url, "events": ep.events, "created_at": _iso(ep.created_at)}
    if secret:
        body["secret"] = ep.secret
    return body


def _webhooks_allowed() -> None:
    if not can(g.user, "manage_webhooks"):
        raise ApiError(403, FORBIDDEN_MESSAGE)


def _endpoint_or_404(endpoint_id: int):
    ep = db.session.scalar(sa.select(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id,
                                                             WebhookEndpoint.agency_id == g.user.agency_id))
    if ep is None:
        raise ApiError(404, "No such webhook endpoint.")
    return ep


@bp.get("/webhooks")
@token_required
def list_webhooks():
    _webhooks_allowed()
    eps = db.session.scalars(sa.select(WebhookEndpoint).where(WebhookEndpoint.agency_id == g.user.agency_id)
                             .order_by(WebhookEndpoint.id)).all()
    return jsonify(webhooks=[_webhook_json(e) for e in eps])


@bp.post("/webhooks")
@token_required
def create_webhook():
    _webhooks_allowed()
    data = _body()
    evs = None if data.get("events") is None else _str_list(
        data, "events", "events is a list of event types, e.g. [\"code.created\", \"alert.*\"].")
    ep = webhooks.create_endpoint(g.user, url=_text(data, "url"), events=evs)
    return jsonify(_webhook_json(ep, secret=True)), 201, {"Cache-Control": "no-store"}


@bp.delete("/webhooks/<int:endpoint_id>")
@token_required
def delete_webhook(endpoint_id: int):
    _webhooks_allowed()
    webhooks.delete_endpoint(_endpoint_or_404(endpoint_id))
    return "", 204


@bp.get("/webhooks/<int:endpoint_id>/deliveries")
@token_required
def webhook_deliveries(endpoint_id: int):
    _webhooks_allowed()
    ep = _endpoint_or_404(endpoint_id)
    rows = db.session.scalars(sa.select(WebhookDelivery).where(WebhookDelivery.endpoint_id == ep.id)
                              .order_by(WebhookDelivery.id.desc()).limit(100)).all()
    return jsonify(deliveries=[{"event_id": d.event_id, "event_type": d.event_type, "status": d.status,
                                "attempts": d.attempts, "last_status": d.last_status, "last_error": d.last_error,
                                "created_at": _iso(d.created_at), "delivered_at": _iso(d.delivered_at),
                                "next_attempt_at": _iso(d.next_attempt_at) if d.status == "pending" else None}
                               for d in rows])


@bp.get("/alert-settings")
@token_required
def get_alert_settings():
    agency = g.user.agency
    return jsonify(on=[k for k in alerts.ALERT_KINDS if alerts.wanted(agency, k)], kinds=list(alerts.ALERT_KINDS))


@bp.put("/alert-settings")
@token_required
def put_alert_settings():
    _webhooks_allowed()
    data = _body()
    on = _str_list(data, "on", f"on is a list of alert kinds among {', '.join(alerts.ALERT_KINDS)}.",
                   alerts.ALERT_KINDS)
    alerts.set_wanted(g.user.agency, set(on))
    return get_alert_settings()
