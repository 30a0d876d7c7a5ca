"""The per-lock calendar: weeks of the property's local days, each code a bar across the days it covers."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

import sqlalchemy as sa

from ..extensions import db
from ..models import Code, Lock
from ..timeutil import UTC, aware, zone

WEEKS = 6


@dataclass
class Bar:
    code: Code
    first: int          # 1..7: the column (Monday = 1) where the bar starts this week
    end: int            # 2..8: the column after its last day
    starts_here: bool   # the period starts in this week (else it continues from the week before)
    ends_here: bool


@dataclass
class Week:
    days: list[date]
    bars: list[Bar] = field(default_factory=list)


def _local_day(dt: datetime, tz) -> date:
    return aware(dt).astimezone(tz).date()


def _last_day(code: Code, tz) -> date:
    """The last local day the code covers: a check-out at 11:00 covers that morning; at 00:00, not that day."""
    end = aware(code.valid_until).astimezone(tz)
    return end.date() - timedelta(days=1) if end.time() == time(0) else end.date()


def weeks(lock: Lock, first_day: date) -> list[Week]:
    """WEEKS weeks from the Monday on or before first_day, with the lock's codes that are not revoked."""
    tz = zone(lock.timezone)
    monday = first_day - timedelta(days=first_day.weekday())
    start = datetime.combine(monday, time(), tz).astimezone(UTC)
    stop = datetime.combine(monday + timedelta(weeks=WEEKS), time(), tz).astimezone(UTC)
    codes = db.session.scalars(sa.select(Code).where(
        Code.lock_id == lock.id, Code.revoked_at.is_(None), Code.valid_from < stop, Code.valid_until > start)
        .order_by(Code.valid_from, Code.id)).all()
    out = []
    for w in range(WEEKS):
        days = [monday + timedelta(days=7 * w + d) for d in range(7)]
        week = Week(days)
        for code in codes:
            first, last = _local_day(code.valid_from, tz), _last_day(code, tz)
            if last < days[0] or first > days[-1]:
                continue
            a, b = max(first, days[0]), min(last, days[-1])
            week.bars.append(Bar(code, a.weekday() + 1, b.weekday() + 2, first >= days[0], last <= days[-1]))
        out.append(week)
    return out
