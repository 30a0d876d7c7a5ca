"""Every lookup by id goes through these helpers: they filter by the caller's agency, so another agency's
lock or code is indistinguishable from one that does not exist (404)."""
from __future__ import annotations

import sqlalchemy as sa
from flask import abort
from sqlalchemy.orm import selectinload

from .extensions import db
from .models import Code, Lock


def agency_lock_or_404(agency_id: int, lock_id: str) -> Lock:
    lock = db.session.scalar(sa.select(Lock).where(Lock.id == str(lock_id).lower(), Lock.agency_id == agency_id))
    if lock is None:
        abort(404)
    return lock


def agency_code_or_404(agency_id: int, code_id: int) -> Code:
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
