"""UTC helpers. The database holds naive UTC; Python code only ever sees aware UTC datetimes."""
from __future__ import annotations

from datetime import datetime, time, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import sqlalchemy as sa

UTC = timezone.utc

# The one default time zone: a lock registered without one (web form, API, installer, simulator) gets it, and
# pages show times that belong to no lock (an account's tokens) in it.
DEFAULT_TIMEZONE = "Europe/Paris"


def utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def to_epoch(dt: datetime | None) -> int | None:
    return None if dt is None else int(dt.timestamp())


def from_epoch(t: int | float | None) -> datetime | None:
    return None if t is None else datetime.fromtimestamp(int(t), UTC)


def aware(dt: datetime | None) -> datetime | None:
    if dt is None:
        return None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def is_valid_zone(name: str) -> bool:
    if not name or name.startswith("/") or ".." in name:
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


_ZONES: list[str] | None = None


def zone_names() -> list[str]:
    global _ZONES
    if _ZONES is None:
        _ZONES = sorted(z for z in available_timezones() if "/" in z and not z.startswith(("Etc/", "SystemV/")))
        _ZONES.append("UTC")
    return _ZONES


def parse_clock(raw: str) -> time:
    """"HH:MM" (24 h, as typed in a form or sent to the API) → time; ValueError with a message otherwise."""
    text = (raw or "").strip()
    if len(text) != 5 or text[2] != ":" or not (text[:2] + text[3:]).isdigit():
        raise ValueError("Give a time as HH:MM (24-hour clock), like 15:00.")
    hours, minutes = int(text[:2]), int(text[3:])
    if hours > 23 or minutes > 59:
        raise ValueError("Give a time as HH:MM (24-hour clock), like 15:00.")
    return time(hours, minutes)


def fmt_clock(value: time) -> str:
    return value.strftime("%H:%M")


class OutOfRange(ValueError):
    """A date-time that has no UTC equivalent Python can represent (before year 1 or after 9999)."""


def local_to_utc(naive_local: datetime, tz_name: str) -> datetime:
    """Interpret a wall-clock time at the property. Ambiguous times take the first occurrence (fold=0).
    Raises OutOfRange when the UTC time falls outside years 1..9999."""
    try:
        return naive_local.replace(tzinfo=ZoneInfo(tz_name)).astimezone(UTC)
    except OverflowError:
        raise OutOfRange(f"{naive_local:%Y-%m-%d %H:%M} is out of range.") from None


def fmt_local(dt: datetime | None, tz_name: str) -> str:
    if dt is None:
        return ""
    local = aware(dt).astimezone(ZoneInfo(tz_name))
    return local.strftime("%Y-%m-%d %H:%M ") + (local.tzname() or tz_name)


class UTCDateTime(sa.types.TypeDecorator):
    """Stores naive UTC, hands back aware UTC, refuses naive input (a bug waiting to happen)."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        return None if value is None else value.replace(tzinfo=UTC)


def fmt_duration(seconds: int) -> str:
    """A length of time for people: "45 s", "12 min", "3 h 5 min", "4 days 2 h"."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    d = s // 86400
    return f"{d} day{'s' if d != 1 else ''} {s % 86400 // 3600} h"
