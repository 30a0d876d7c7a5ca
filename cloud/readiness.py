"""Is each upcoming stay ready? Per arrival: code acknowledged by the lock, lock seen recently, clock right,
no backup-key replacement pending. Used by the arrivals page, GET /api/v1/arrivals and the pre-arrival checks."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.orm import selectinload

from .extensions import db
from .models import BackupKeyRotation, Code, Lock
from .timeutil import utcnow

SEEN_WITHIN = timedelta(minutes=30)
HORIZON = timedelta(days=7)


@dataclass
class Readiness:
    code: Code
    on_lock: bool
    seen_recently: bool
    clock_ok: bool
    rotation_pending: bool
    problems: list[str] = field(default_factory=list)
    advice: list[str] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return not self.problems


def check(code: Code, lock: Lock, now: datetime, rotation_pending: bool) -> Readiness:
    seen = lock.online is True or (lock.last_seen_at is not None and now - lock.last_seen_at <= SEEN_WITHIN)
    skew = lock.clock_skew_s
    clock_ok = skew is not None and abs(skew) <= int(current_app.config["ALERT_CLOCK_SKEW_S"])
    r = Readiness(code=code, on_lock=code.on_lock_at is not None, seen_recently=seen, clock_ok=clock_ok,
                  rotation_pending=rotation_pending)
    if not r.on_lock:
        r.problems.append("the code is not on the lock yet (the lock has not acknowledged it)")
    if not seen:
        last = lock.last_seen_at.isoformat() if lock.last_seen_at else "never"
        r.problems.append(f"the lock has not been seen for more than 30 minutes (last seen: {last})")
    if not clock_ok:
        r.problems.append("the lock's clock is unknown" if skew is None
                          else f"the lock's clock is off by {abs(skew)} s")
    if rotation_pending:
        r.problems.append("a backup-key replacement is waiting for the lock to install it")
    if not seen or not r.on_lock:
        r.advice.append("Check the lock's power and Wi-Fi; it fetches its codes as soon as it is back online.")
    if r.problems:
        r.advice.append("If it cannot be fixed before the arrival, give the guest the lock's backup key: it opens "
                        "the door even offline and without a trusted clock (it is then replaced 24 h later).")
    return r


def upcoming(agency_id: int, now: datetime | None = None, horizon: timedelta = HORIZON) -> list[Readiness]:
    """Live codes of the agency whose check-in is in [now, now + horizon), soonest first."""
    now = now or utcnow()
    codes = db.session.scalars(sa.select(Code).where(
        Code.agency_id == agency_id, Code.revoked_at.is_(None), Code.valid_from >= now,
        Code.valid_from < now + horizon).order_by(Code.valid_from, Code.id)
        .options(selectinload(Code.lock).selectinload(Lock.connection))).all()
    lock_ids = {c.lock_id for c in codes}
    pending = set(db.session.scalars(sa.select(BackupKeyRotation.lock_id).where(
        BackupKeyRotation.lock_id.in_(lock_ids), BackupKeyRotation.installed_at.is_(None)))) if lock_ids else set()
    return [check(c, c.lock, now, c.lock_id in pending) for c in codes]
