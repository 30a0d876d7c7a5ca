"""Every lookup by id goes through these helpers: they filter by the caller's agency, so another agency's
lock or code is indistinguishable from one that does not exist (404)."""
from __future__ import annotations

from datetime import date, datetime, time, timedelta

import sqlalchemy as sa
from flask import abort
from sqlalchemy.orm import selectinload

from .extensions import db
from .models import Code, Lock
from .timeutil import UTC, utcnow


def agency_lock_or_404(agency_id: int, lock_id: str) -> Lock:
    lock = db.session.scalar(sa.select(Lock).where(Lock.id == str(lock_id).lower(), Lock.agency_id == agency_id))
    if lock is None:
        abort(404)
    return lock


# Code ids are 32-bit integer columns: a larger id in a URL cannot exist (and SQLite could not even bind it).
MAX_CODE_ID = 2 ** 31 - 1


def agency_code_or_404(agency_id: int, code_id: int) -> Code:
    if not 0 < code_id <= MAX_CODE_ID:
        abort(404)
    code = db.session.scalar(sa.select(Code).where(Code.id == code_id, Code.agency_id == agency_id))
    if code is None:
        abort(404)
    return code


def agency_locks(agency_id: int, *, with_connection: bool = False):
    """The agency's locks; with_connection loads each lock's bridge state in one more query (lists that
    show online/offline)."""
    q = sa.select(Lock).where(Lock.agency_id == agency_id)
    return q.options(selectinload(Lock.connection)) if with_connection else q


def agency_codes(agency_id: int):
    return sa.select(Code).where(Code.agency_id == agency_id)


class BadFilter(ValueError):
    """A history filter value that cannot be applied; the message is fit for the user."""


def _day(value: str, name: str) -> date:
    try:
        return datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError:
        raise BadFilter(f"{name} “{value[:40]}” is not a date (YYYY-MM-DD).") from None


def _like_escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def code_history(agency_id: int, *, lock_id: str = "", status: str = "", customer: str = "", since: str = "",
                 until: str = "", now: datetime | None = None, labels: tuple[str, str] = ("From", "To")):
    """The agency's codes narrowed by the history filters of the pages, the CSV export and the API (an empty
    value is no filter): one lock; a status (Code.STATUSES); a customer name or email containing the text
    (taken literally: % and _ are not wildcards); periods overlapping the UTC days since..until, both
    included. Raises BadFilter for an unknown status, a malformed date or since after until (`labels` name
    since and until in its message: the fields of the page, the parameters of the API). The caller orders the
    query."""
    q = agency_codes(agency_id)
    if lock_id:
        q = q.where(Code.lock_id == lock_id.strip().lower())
    if status:
        if status not in Code.STATUSES:
            raise BadFilter(f"status is one of {', '.join(Code.STATUSES)}.")
        q = q.where(Code.status_filter(status, now or utcnow()))
    if customer:
        like = f"%{_like_escaped(customer.lower())}%"
        q = q.where(sa.or_(sa.func.lower(Code.customer_name).like(like, escape="\\"),
                           sa.func.lower(Code.customer_email).like(like, escape="\\")))
    first = _day(since, labels[0]) if since else None
    last = _day(until, labels[1]) if until else None
    if first and last and first > last:
        raise BadFilter(f"“{labels[0]}” ({first:%Y-%m-%d}) is after “{labels[1]}” ({last:%Y-%m-%d}): swap them.")
    if first:
        q = q.where(Code.valid_until > datetime.combine(first, time(), UTC))
    if last:
        if last < date.max:  # the whole day: periods that start before the next midnight
            q = q.where(Code.valid_from < datetime.combine(last + timedelta(days=1), time(), UTC))
    return q
