"""The `flask --app cloud automation` worker: reads the database every AUTOMATION_TICK_S and acts on what
changed: lock.online / lock.offline events, the "offline for long" / "back online" alert episode, and the
pre-arrival readiness checks (READINESS_HOURS before each check-in, one mail per stay and checkpoint)."""
from __future__ import annotations

import logging
from datetime import datetime, timedelta

import sqlalchemy as sa
from flask import current_app

from . import alerts, events, outbox, readiness
from .extensions import db
from .models import Alert, BackupKeyRotation, BridgeLockState, Code, Lock, LockWatch
from .timeutil import fmt_local, utcnow

log = logging.getLogger("keydrop.automation")


def checkpoints() -> list[int]:
    """READINESS_HOURS ("24,2") as hours, largest first."""
    raw = str(current_app.config["READINESS_HOURS"])
    return sorted({int(h) for h in raw.replace(" ", "").split(",") if h}, reverse=True)


def watch_connections(now: datetime) -> int:
    """Emit lock.online / lock.offline for each change of the bridge's view; open/close the offline alert."""
    after = timedelta(seconds=int(current_app.config["ALERT_OFFLINE_AFTER_S"]))
    rows = db.session.execute(sa.select(Lock, BridgeLockState, LockWatch)
                              .join(BridgeLockState, BridgeLockState.lock_id == Lock.id)
                              .outerjoin(LockWatch, LockWatch.lock_id == Lock.id)
                              .where(BridgeLockState.online_changed_at.is_not(None))).all()
    # A lock seen for the first time (a new lock, or every lock when the worker first runs) is announced only if
    # its state changed just now: the state of a lock that has been online for days is no event.
    fresh = timedelta(seconds=max(60.0, 2 * float(current_app.config["AUTOMATION_TICK_S"])))
    changes = 0
    for lock, state, watch in rows:
        first_look = watch is None
        if watch is None:
            watch = LockWatch(lock_id=lock.id, online=None, changed_at=None)
            db.session.add(watch)
        if (watch.online, watch.changed_at) != (state.online, state.online_changed_at):
            if watch.online != state.online and (not first_look or now - state.online_changed_at <= fresh):
                events.emit(lock.agency_id, "lock.online" if state.online else "lock.offline",
                            {"lock_id": lock.id, "lock_name": lock.name, "at": events.iso(state.online_changed_at)})
                changes += 1
            watch.online, watch.changed_at = state.online, state.online_changed_at
        episode = alerts.open_episode(lock, "offline", now=now)
        if not state.online and episode is None and now - state.online_changed_at >= after:
            since = fmt_local(state.online_changed_at, lock.timezone)
            alerts.raise_alert(lock, "offline", now=now, subject=f"offline since {since}",
                               lines=[f"The lock has been offline since {since} (more than {int(after.total_seconds()) // 60} minutes).",
                                      "Codes already on the lock keep working offline; new codes, revocations "
                                      "and date changes wait until it is back."],
                               advice="Check the lock's power and the property's Wi-Fi. Guests arriving before "
                                      "it is back and whose code is not on the lock can use the backup key.",
                               detail={"since": events.iso(state.online_changed_at)})
        elif state.online and episode is not None:
            alerts.close_episode(episode, now)
            went = (episode.detail or {}).get("since")
            went_local = fmt_local(datetime.fromisoformat(went.replace("Z", "+00:00")), lock.timezone) if went else "?"
            alerts.notify(lock, "offline_back", now=now, subject="back online",
                          lines=[f"The lock is back online since {fmt_local(state.online_changed_at, lock.timezone)}"
                                 f" (offline since {went_local})."],
                          detail={"since": events.iso(state.online_changed_at)})
        db.session.commit()
    return changes


def _time_left(left: timedelta) -> str:
    """How long until the check-in, as the subject says it: "23 h", "40 min" (the checkpoint passed may be
    earlier than now when the worker was stopped)."""
    minutes = max(0, round(left.total_seconds() / 60))
    return f"{round(minutes / 60)} h" if minutes >= 60 else f"{minutes} min"


def check_arrivals(now: datetime) -> int:
    """At each checkpoint before a check-in, check the stay once; mail the owner if it is not ready."""
    hours = checkpoints()
    if not hours:
        return 0
    codes = db.session.scalars(sa.select(Code).where(
        Code.revoked_at.is_(None), Code.valid_from > now,
        Code.valid_from <= now + timedelta(hours=hours[0]))).all()
    mailed = 0
    for code in codes:
        due = [h for h in hours if now >= code.valid_from - timedelta(hours=h)]
        h = min(due)  # the latest checkpoint passed (a worker that was down checks only that one)
        key = f"{code.id}:{h}h"
        if db.session.scalar(sa.select(Alert.id).where(Alert.lock_id == code.lock_id, Alert.kind == "not_ready",
                                                       Alert.key == key)) is not None:
            continue
        lock = code.lock
        pending = db.session.scalar(sa.select(BackupKeyRotation.id).where(
            BackupKeyRotation.lock_id == lock.id, BackupKeyRotation.installed_at.is_(None))) is not None
        r = readiness.check(code, lock, now, pending)
        if r.ready:  # recorded so this checkpoint is not looked at again
            db.session.add(Alert(agency_id=lock.agency_id, lock_id=lock.id, kind="not_ready", key=key,
                                 opened_at=now, last_at=now, closed_at=now, detail={"ready": True}))
        else:
            who = code.customer_name or "a guest"
            alerts.raise_alert(
                lock, "not_ready", now=now, key=key, close=True,
                subject=f"arrival in {_time_left(code.valid_from - now)} not ready",
                lines=[f"{who} arrives at {fmt_local(code.valid_from, lock.timezone)} (code {code.code}), "
                       "and the stay is not ready:", *[f"- {p}" for p in r.problems]],
                advice=" ".join(r.advice),
                detail={"ready": False, "code_id": code.id, "hours": h, "problems": r.problems})
            mailed += 1
        db.session.commit()
    return mailed


def tick(now: datetime | None = None) -> dict:
    now = now or utcnow()
    return {"connection_changes": watch_connections(now), "not_ready": check_arrivals(now)}


def run_forever(*, interval: float | None = None, stop=None) -> None:
    interval = float(current_app.config["AUTOMATION_TICK_S"]) if interval is None else interval
    outbox.run_periodically(tick, interval, log=log, what="automation", stop=stop)
