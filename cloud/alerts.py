"""Alerts: one owner email (and an `alert.*` webhook event) per episode of a lock needing a person.

An episode is an Alert row: opened when the condition starts (the mail goes out then, once), closed when it
clears. Kinds and what opens / closes them are in ALERT_KINDS and docs/automation.md. Hooks are called from the
domain operations the bridge uses (lock events, hellos, acknowledgements) and from the automation worker
(offline for long, readiness before arrivals), in the caller's transaction.
"""
from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from flask import current_app

from . import events
from .extensions import db
from .mailer import absolute_url, enqueue
from .models import Agency, Alert, Lock
from .timeutil import fmt_local, utcnow

ALERT_KINDS = {
    "offline": "A lock has been offline for a while, and when it is back online",
    "backup_used": "The backup key was used",
    "lockout": "The keypad locked itself out after wrong codes",
    "clock": "A lock's clock is off by more than 2 minutes",
    "not_ready": "A stay is not ready 24 h / 2 h before its check-in",
}
# Lockout steps (30 s, 60 s, 120 s…) closer together than this belong to one episode.
LOCKOUT_EPISODE = timedelta(hours=1)


def wanted(agency: Agency, kind: str) -> bool:
    return kind not in (agency.alerts_off or [])


def set_wanted(agency: Agency, kinds: set[str]) -> None:
    agency.alerts_off = sorted(set(ALERT_KINDS) - set(kinds))
    db.session.commit()


def lock_url(lock: Lock) -> str:
    return absolute_url("locks.show", lock_id=lock.id)


def open_episode(lock: Lock, kind: str, *, now: datetime, key: str = "") -> Alert | None:
    """The open episode of (lock, kind, key), or None. Takes the lock's row lock first so two workers
    deciding about the same lock serialise (PostgreSQL; SQLite serialises writers anyway)."""
    db.session.execute(sa.select(Lock.id).where(Lock.id == lock.id).with_for_update())
    return db.session.scalar(sa.select(Alert).where(Alert.lock_id == lock.id, Alert.kind == kind,
                                                    Alert.key == key, Alert.closed_at.is_(None)))


def raise_alert(lock: Lock, kind: str, *, now: datetime, subject: str, lines: list[str], advice: str = "",
                key: str = "", detail: dict | None = None, close: bool = False) -> Alert:
    """Open an episode and tell the owner (if the agency wants this kind) and the webhooks. `close`: a one-off
    (the episode is its mail)."""
    alert = Alert(agency_id=lock.agency_id, lock_id=lock.id, kind=kind, key=key, opened_at=now, last_at=now,
                  closed_at=now if close else None, detail=detail)
    db.session.add(alert)
    notify(lock, kind, now=now, subject=subject, lines=lines, advice=advice, detail=detail)
    return alert


def notify(lock: Lock, kind: str, *, now: datetime, subject: str, lines: list[str], advice: str = "",
           detail: dict | None = None) -> None:
    if wanted(lock.agency, kind.removesuffix("_back")):
        enqueue(lock.agency.owner.email, "alert", f"{lock.name}: {subject}", lock=lock, lines=lines,
                advice=advice, url=lock_url(lock), when=fmt_local(now, lock.timezone))
    events.emit(lock.agency_id, "alert." + ("online" if kind == "offline_back" else kind),
                {"lock_id": lock.id, "lock_name": lock.name, "summary": subject, "detail": detail or {},
                 "at": events.iso(now)})


def close_episode(alert: Alert, now: datetime) -> None:
    alert.closed_at = now


# ---------------------------------------------------------------- hooks on what the lock reports


def on_lock_event(lock: Lock, kind: str, t: datetime | None, detail: dict, now: datetime | None = None) -> None:
    """A new access-log entry (domain.record_events)."""
    now = now or utcnow()
    when = fmt_local(t, lock.timezone) if t else "an unknown time (the lock had no trusted time)"
    if kind == "lockout":
        ep = open_episode(lock, "lockout", now=now)
        if ep is not None and now - ep.last_at <= LOCKOUT_EPISODE:
            ep.last_at = now
            ep.detail = {**(ep.detail or {}), "steps": int((ep.detail or {}).get("steps", 1)) + 1,
                         "seconds": detail.get("seconds")}
            return
        if ep is not None:
            close_episode(ep, now)
        raise_alert(lock, "lockout", now=now, subject="keypad locked out",
                    lines=[f"The keypad locked itself out after repeated wrong codes, at {when}.",
                           "Further lockouts of this episode are not emailed; the next mail comes after a "
                           "successful opening or an hour without lockouts."],
                    advice="If nobody you know was trying to get in, check on the property.",
                    detail={"steps": 1, "seconds": detail.get("seconds")})
    elif kind in ("opened", "opened_backup"):
        ep = open_episode(lock, "lockout", now=now)
        if ep is not None:
            close_episode(ep, now)  # a success ends the lockout episode
        if kind == "opened_backup" and open_episode(lock, "backup_used", now=now) is None:
            raise_alert(lock, "backup_used", now=now, subject="the backup key was used",
                        lines=[f"Someone opened the door with the backup key at {when}.",
                               "The lock asks for a new backup key 24 hours after this first use; the old one "
                               "keeps working until the new one is installed, and you will get it by email."],
                        advice="If that was not you or someone you gave it to, check on the property.")


def on_backup_replaced(lock: Lock, now: datetime | None = None) -> None:
    """The lock installed a new backup key: the 'backup key used' episode is over."""
    ep = open_episode(lock, "backup_used", now=now or utcnow())
    if ep is not None:
        close_episode(ep, now or utcnow())


def on_clock(lock: Lock, skew_s: int | None, now: datetime | None = None) -> None:
    """A hello reported the lock's clock (domain.lock_hello), or the lock set it from the cloud's reply (skew 0):
    skew beyond ALERT_CLOCK_SKEW_S opens an episode, back within it closes it. None (no trusted time yet, normal
    at boot: the cloud's reply sets it) is left."""
    if skew_s is None:
        return
    now = now or utcnow()
    limit = int(current_app.config["ALERT_CLOCK_SKEW_S"])
    ep = open_episode(lock, "clock", now=now)
    if abs(skew_s) <= limit:
        if ep is not None:
            close_episode(ep, now)
        return
    if ep is None:
        raise_alert(lock, "clock", now=now, subject=f"clock off by {abs(skew_s)} s",
                    lines=[f"The lock's clock is {abs(skew_s)} seconds {'ahead' if skew_s > 0 else 'behind'} "
                           f"(more than {limit} s). Codes open and expire at the lock's idea of time."],
                    advice="The lock corrects its clock from the cloud's signed replies; if this mail comes "
                           "back, check its Wi-Fi and RTC battery, and give arriving guests the backup key.",
                    detail={"skew_s": skew_s})
    else:
        ep.last_at = now
