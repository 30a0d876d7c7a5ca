"""Reservation feed sync: fetch a lock's iCal feed (through the SSRF guard) and make its codes follow it.

Rules (docs/automation.md): one code per reservation UID; a re-sync changes nothing; changed dates move the same
code (guest keeps the digits, owner told); STATUS:CANCELLED revokes at once; a reservation missing from the feed is
revoked only after two consecutive good syncs without it, its absence having lasted CALENDAR_POLL_S (a sync that lost
every live reservation at once counts only after an emptied one before it); a failed or unreadable fetch changes no code and is
shown as the feed's last_error. A code a person revoked is never brought back by the feed.
"""
from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta

import sqlalchemy as sa
from flask import current_app

from .. import netguard, outbox
from ..domain import DomainError, generate_code, move_code, revoke_code
from ..extensions import db
from ..models import CalendarFeed, Code
from ..timeutil import utcnow
from .parse import FeedError, Stay, parse, printable

log = logging.getLogger("keydrop.calendars")

CLAIM_FOR = timedelta(minutes=10)
ABSENT_SYNCS_TO_REVOKE = 2
_GENERIC_SUMMARY = re.compile(r"^(reserved|reservation|booked|booking|airbnb|vrbo|closed - not available)$",
                              re.IGNORECASE)


def guest_name(summary: str) -> str | None:
    """A name the summary may carry ("Reserved - Ana Lima" -> "Ana Lima"); None for a generic word."""
    text = re.sub(r"^(reserved|reservation|booked)\s*[-:–]\s*", "", summary.strip(), flags=re.IGNORECASE)
    return None if not text or _GENERIC_SUMMARY.match(text) else text[:120]


def _claim(feed_id: int, now: datetime) -> bool:
    res = db.session.execute(sa.update(CalendarFeed).where(
        CalendarFeed.id == feed_id,
        sa.or_(CalendarFeed.claimed_until.is_(None), CalendarFeed.claimed_until < now))
        .values(claimed_until=now + CLAIM_FOR, last_attempt_at=now))
    db.session.commit()
    return res.rowcount == 1


def _fail(feed: CalendarFeed, message: str) -> dict:
    message = printable(message)
    feed.last_error = message[:500]
    feed.claimed_until = None
    db.session.commit()
    log.warning("feed %s (lock %s): %s", feed.id, feed.lock_id, message)
    return {"ok": False, "error": message}


def _fetch(feed: CalendarFeed) -> netguard.Response:
    cfg = current_app.config
    headers = {"Accept": "text/calendar, */*;q=0.5"}
    if feed.etag:
        headers["If-None-Match"] = feed.etag
    if feed.last_modified:
        headers["If-Modified-Since"] = feed.last_modified
    return netguard.request("GET", feed.url, headers=headers, timeout=float(cfg["CALENDAR_TIMEOUT_S"]),
                            max_bytes=int(cfg["CALENDAR_MAX_BYTES"]),
                            allow_private=bool(cfg["CALENDAR_ALLOW_PRIVATE_HOSTS"]))


def _validator(value: str | None, column) -> str | None:
    """An ETag / Last-Modified to send back next time, or None if it does not fit its column: a cut one would
    never match, and an over-long one would fail the commit (PostgreSQL checks the length)."""
    if value is None or len(value) > column.type.length:
        return None
    return value


def sync_feed(feed: CalendarFeed, now: datetime | None = None) -> dict:
    """Fetch and apply one feed. Returns {"ok", "error"?, "created", "moved", "revoked", "unchanged"}."""
    now = now or utcnow()
    if not _claim(feed.id, now):
        return {"ok": False, "error": "another worker is syncing this feed"}
    db.session.refresh(feed)
    if feed.lock.is_decommissioned:
        return _fail(feed, "The lock is decommissioned: its feed is no longer fetched.")
    try:
        resp = _fetch(feed)
    except netguard.FetchError as exc:
        return _fail(feed, str(exc))
    if resp.status == 304:
        counts = _apply(feed, None, set(), now)
    elif resp.status != 200:
        return _fail(feed, f"The feed answered HTTP {resp.status}; no code was changed.")
    elif not resp.body.strip():
        return _fail(feed, "The feed answered an empty document; no code was changed.")
    else:
        lock = feed.lock
        try:
            parsed = parse(resp.body, tz_name=lock.timezone, checkin=lock.checkin_time,
                           checkout=lock.checkout_time)
        except FeedError as exc:
            return _fail(feed, f"{exc} No code was changed.")
        if not lock.is_active:
            return _fail(feed, "The lock has not come online yet: reservations become codes once it is active.")
        counts = _apply(feed, parsed.stays, parsed.cancelled, now)
        feed.events_seen, feed.reservations_seen = parsed.events, len(parsed.stays)
        if counts["warnings"]:
            # a reservation that could not become a code (no free digits, too many codes) must be tried again
            # at the next sync: no validators, so that sync fetches the document in full instead of a 304
            feed.etag = feed.last_modified = None
        else:
            feed.etag = _validator(resp.headers.get("etag"), CalendarFeed.etag)
            feed.last_modified = _validator(resp.headers.get("last-modified"), CalendarFeed.last_modified)
    warnings = counts.pop("warnings")
    feed.last_sync_at = now
    feed.last_error = printable("; ".join(warnings))[:500] or None
    feed.claimed_until = None
    db.session.commit()
    log.info("feed %s (lock %s) synced: %s", feed.id, feed.lock_id, counts)
    return {"ok": True, **counts}


def _apply(feed: CalendarFeed, stays: dict[str, Stay] | None, cancelled: set[str], now: datetime) -> dict:
    """Make the lock's calendar codes follow `stays` (None: the feed did not change since the last good sync)."""
    counts = {"created": 0, "moved": 0, "revoked": 0, "unchanged": 0, "warnings": []}
    lock = feed.lock
    latest: dict[str, Code] = {}
    for code in db.session.scalars(sa.select(Code).where(
            Code.lock_id == lock.id, Code.source == "calendar").order_by(Code.id)):
        latest[code.reservation_uid] = code
    for uid, stay in (stays or {}).items():
        code = latest.get(uid)
        if stay.end <= now or (code is not None and code.revoked_at is not None and code.revoked_by_id is not None):
            continue  # over, or revoked by a person: the feed does not overrule them
        try:
            if code is None or code.revoked_at is not None:
                generate_code(lock, valid_from=stay.start, valid_until=stay.end, by=None,
                              customer_name=guest_name(stay.summary), reservation_uid=uid, now=now)
                counts["created"] += 1
            elif code.valid_until <= now:
                continue
            elif move_code(code, valid_from=stay.start, valid_until=stay.end, now=now):
                counts["moved"] += 1
            else:
                counts["unchanged"] += 1
        except DomainError as exc:
            db.session.rollback()
            counts["warnings"].append(f"{stay.summary or uid} ({stay.start:%Y-%m-%d}): {exc.message}")
            continue
        if code is not None and code.feed_absent:
            code.feed_absent, code.feed_absent_since = 0, None
            db.session.commit()
    live = {uid: code for uid, code in latest.items() if code.revoked_at is None and code.valid_until > now}
    for uid in [uid for uid in live if uid in cancelled and (stays is None or uid not in stays)]:
        revoke_code(live.pop(uid), by=None, now=now, reason="the reservation was cancelled in the feed")
        counts["revoked"] += 1
    # missing: not in this answer (a 304: missing from the answer it repeats)
    absent = [code for uid, code in live.items() if (uid not in stays if stays is not None else code.feed_absent)]
    emptied = bool(live) and len(absent) == len(live) and not counts["created"]
    # a sync that lost every live reservation at once and brought none (an export served empty for a while) is
    # believed only when the good sync before it was emptied too
    believed = not emptied or feed.emptied_since is not None
    feed.emptied_since = (feed.emptied_since or now) if emptied else None
    lasting = timedelta(seconds=float(current_app.config["CALENDAR_POLL_S"]))
    for code in absent:
        code.feed_absent += 1
        code.feed_absent_since = code.feed_absent_since or now
        if code.feed_absent >= ABSENT_SYNCS_TO_REVOKE and believed and now - code.feed_absent_since >= lasting:
            revoke_code(code, by=None, now=now,
                        reason="the reservation is no longer in the feed (missing from two syncs in a row)")
            counts["revoked"] += 1
        else:
            db.session.commit()
    return counts


def sync_due(now: datetime | None = None, *, every: bool = False) -> dict:
    """One pass: sync each feed not attempted for CALENDAR_POLL_S (every feed with `every`)."""
    now = now or utcnow()
    q = sa.select(CalendarFeed.id).order_by(CalendarFeed.id)
    if not every:
        due = now - timedelta(seconds=float(current_app.config["CALENDAR_POLL_S"]))
        q = q.where(sa.or_(CalendarFeed.last_attempt_at.is_(None), CalendarFeed.last_attempt_at <= due))
    totals = {"feeds": 0, "failed": 0, "created": 0, "moved": 0, "revoked": 0}
    for feed_id in db.session.scalars(q).all():
        feed = db.session.get(CalendarFeed, feed_id)
        if feed is None:
            continue
        result = sync_feed(feed, now)
        totals["feeds"] += 1
        if not result["ok"]:
            totals["failed"] += 1
        for key in ("created", "moved", "revoked"):
            totals[key] += result.get(key, 0)
    return totals


def run_forever(*, tick: float = 5.0, stop=None) -> None:
    """The `flask --app cloud calendars` worker: every `tick` s, sync the feeds that are due."""
    outbox.run_periodically(sync_due, tick, log=log, what="calendar", stop=stop)
