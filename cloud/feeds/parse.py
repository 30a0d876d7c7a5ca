"""iCal reservation feed -> stays: which events are reservations, and each stay's window at the property.

The rule (docs/automation.md, "Which events become codes"):
- an event is a stay unless it is cancelled (STATUS:CANCELLED), marked free (TRANSP:TRANSPARENT), recurring
  (RRULE: no reservation repeats), or its SUMMARY names a block rather than a guest: it contains "not available",
  "unavailable", "blocked", "closed", "owner" or "maintenance" (case-insensitive): Airbnb's "Airbnb (Not
  available)", Vrbo's "Blocked", a PMS's "Owner stay"...
- except on Booking.com feeds (UIDs ending in @booking.com): Booking.com names every booked period
  "CLOSED - Not available", so there every event that is not cancelled is a stay;
- the stay runs from the lock's check-in time on its start date to its check-out time on its end date, in the
  property's time zone, for all-day events (DTEND is the check-out day) and timed events alike (their dates are
  taken at the property); a stay that would end before it starts, or that lasts more than a year, is skipped.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

import icalendar
from icalendar.error import BrokenCalendarProperty

from ..timeutil import UTC, OutOfRange, local_to_utc, zone

BLOCK_WORDS = re.compile(r"not available|unavailable|blocked|closed|owner|maintenance", re.IGNORECASE)
MAX_STAY = timedelta(days=366)


class FeedError(ValueError):
    """The answer is not a usable iCal calendar; the message says why."""


@dataclass(frozen=True)
class Stay:
    uid: str
    start: datetime  # aware UTC
    end: datetime
    summary: str


@dataclass
class Parsed:
    events: int                  # VEVENTs in the feed
    stays: dict[str, Stay]       # uid -> stay
    cancelled: set[str]          # uids the feed explicitly cancelled
    skipped: list[tuple[str, str]]  # (uid or summary, why)


def printable(text: str) -> str:
    """Feed-supplied text as it may be stored and shown (PostgreSQL refuses NUL; control bytes garble pages)."""
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def _day(value, tz_name: str) -> date:
    """The date at the property of a DTSTART/DTEND value (date, floating or zoned date-time)."""
    if isinstance(value, datetime):
        if value.tzinfo is None:  # floating time: the property's own clock
            return value.date()
        return value.astimezone(zone(tz_name)).date()
    return value


def _end_value(ev):
    if ev.get("DTEND") is not None:
        return ev.get("DTEND").dt
    if ev.get("DURATION") is not None:
        return ev.get("DTSTART").dt + ev.get("DURATION").dt
    start = ev.get("DTSTART").dt
    return start + timedelta(days=1) if not isinstance(start, datetime) else start


def parse(body: bytes, *, tz_name: str, checkin: time, checkout: time) -> Parsed:
    try:
        cal = icalendar.Calendar.from_ical(body)
    except (ValueError, IndexError, KeyError):  # the library's message quotes the content: not shown
        raise FeedError("The answer is not an iCal calendar (it could not be parsed).") from None
    if not isinstance(cal, icalendar.Calendar) or cal.name != "VCALENDAR":
        raise FeedError("Not an iCal calendar (no VCALENDAR).")
    result = Parsed(events=0, stays={}, cancelled=set(), skipped=[])
    for ev in cal.walk("VEVENT"):
        result.events += 1
        uid = printable(str(ev.get("UID") or "")).strip()
        summary = printable(str(ev.get("SUMMARY") or "")).strip()
        label = uid or summary or "(event without UID)"
        if not uid:
            result.skipped.append((label, "no UID"))
            continue
        if len(uid) > 255:
            result.skipped.append((uid[:60] + "…", "UID longer than 255 characters"))
            continue
        if str(ev.get("STATUS") or "").upper() == "CANCELLED":
            result.cancelled.add(uid)
            continue
        if str(ev.get("TRANSP") or "").upper() == "TRANSPARENT":
            result.skipped.append((label, "marked free (TRANSP:TRANSPARENT)"))
            continue
        if ev.get("RRULE") is not None:
            result.skipped.append((label, "recurring event"))
            continue
        if BLOCK_WORDS.search(summary) and not uid.lower().endswith("@booking.com"):
            result.skipped.append((label, f"a block, not a stay (“{summary[:60]}”)"))
            continue
        try:
            if ev.get("DTSTART") is None:
                raise ValueError("no DTSTART")
            first, last = _day(ev.get("DTSTART").dt, tz_name), _day(_end_value(ev), tz_name)
            start = local_to_utc(datetime.combine(first, checkin), tz_name)
            end = local_to_utc(datetime.combine(last, checkout), tz_name)
        except (ValueError, TypeError, AttributeError, OutOfRange, BrokenCalendarProperty) as exc:
            result.skipped.append((label, f"unreadable dates ({str(exc)[:80]})"))
            continue
        if end <= start:
            result.skipped.append((label, "ends before it starts at the lock's check-in/check-out times"))
            continue
        if end - start > MAX_STAY:
            result.skipped.append((label, "longer than a year"))
            continue
        result.stays[uid] = Stay(uid=uid, start=start.astimezone(UTC), end=end.astimezone(UTC), summary=summary)
    return result
