"""Setting, reading and removing a lock's reservation feed (shared by the lock's feed page and the API)."""
from __future__ import annotations

import sqlalchemy as sa
from flask import current_app

from .. import netguard
from ..domain import DomainError, audit
from ..extensions import db
from ..models import CalendarFeed, Code, Lock, User
from ..timeutil import utcnow

MAX_URL = 2000


def normalise_url(raw: str) -> str:
    """webcal:// (what Airbnb and calendar apps hand out) is https://; anything but http(s) is refused."""
    url = (raw or "").strip()
    if url.lower().startswith("webcal://"):
        url = "https://" + url[len("webcal://"):]
    if not url:
        raise DomainError("Give the feed's URL (the iCal / .ics export link of the listing).")
    if len(url) > MAX_URL:
        raise DomainError(f"The URL can have at most {MAX_URL} characters.")
    try:
        netguard.check_destination(url, allow_private=bool(current_app.config["CALENDAR_ALLOW_PRIVATE_HOSTS"]))
    except netguard.FetchError as exc:
        raise DomainError(str(exc)) from None
    return url


def feed_of(lock: Lock) -> CalendarFeed | None:
    return db.session.scalar(sa.select(CalendarFeed).where(CalendarFeed.lock_id == lock.id,
                                                            CalendarFeed.agency_id == lock.agency_id))


def set_feed(lock: Lock, url: str, *, by: User) -> CalendarFeed:
    """Attach (or replace) the lock's feed; the worker syncs it at its next pass."""
    url = normalise_url(url)
    feed = feed_of(lock)
    if feed is None:
        feed = CalendarFeed(lock_id=lock.id, agency_id=lock.agency_id, url=url, created_at=utcnow(),
                            events_seen=0, reservations_seen=0)
        db.session.add(feed)
    elif feed.url != url:
        feed.url, feed.etag, feed.last_modified, feed.last_error = url, None, None, None
    feed.last_attempt_at = None  # due now
    audit(lock.agency_id, "set_calendar_feed", user=by, lock_id=lock.id)
    db.session.commit()
    return feed


def remove_feed(lock: Lock, *, by: User) -> bool:
    """Detach the feed. Codes it made stay as they are (revoke them by hand if the stays are off)."""
    feed = feed_of(lock)
    if feed is None:
        return False
    db.session.delete(feed)
    audit(lock.agency_id, "remove_calendar_feed", user=by, lock_id=lock.id)
    db.session.commit()
    return True


def request_sync(feed: CalendarFeed) -> None:
    feed.last_attempt_at = None
    db.session.commit()


def calendar_codes(lock: Lock, now=None) -> list[Code]:
    now = now or utcnow()
    return db.session.scalars(sa.select(Code).where(
        Code.lock_id == lock.id, Code.agency_id == lock.agency_id, Code.source == "calendar",
        Code.revoked_at.is_(None), Code.valid_until > now).order_by(Code.valid_from)).all()
