"""Firmware rollouts: which locks should run which release, and what the bridge does with a lock's hello,
chunk requests and update reports (docs/ota.md). Every write is one short transaction."""
from __future__ import annotations

import base64
import hashlib
import logging
from datetime import datetime

import sqlalchemy as sa

from ..extensions import db
from ..models import FirmwareRelease, FirmwareRollout, Lock, LockFirmware
from ..timeutil import utcnow
from .release import ReleaseError, Signed, parse_version

log = logging.getLogger(__name__)

MAX_CHUNK = 2048            # the lock asks for at most this much per chunk (device/ota.py CHUNK)
DEFAULT_HALT_SHARE = 0.2    # a rollout halts when more than this share of its locks rolled back
ACTIVE_STATES = ("announced", "downloading", "staged")


def save_release(signed: Signed) -> FirmwareRelease:
    if db.session.scalar(sa.select(FirmwareRelease.id).where(FirmwareRelease.version == signed.version,
                                                              FirmwareRelease.target == signed.target)):
        raise ReleaseError(f"release {signed.version} for {signed.target} exists already: "
                           f"a version is built once (give the new build a new version)")
    rel = FirmwareRelease(version=signed.version, target=signed.target, size=len(signed.data),
                          sha256=signed.sha256, signature=signed.signature, flags=signed.flags,
                          data=signed.data, created_at=utcnow())
    db.session.add(rel)
    db.session.commit()
    return rel


def find_release(version: str, target: str | None = None) -> FirmwareRelease:
    parse_version(version)
    q = sa.select(FirmwareRelease).where(FirmwareRelease.version == version)
    if target:
        q = q.where(FirmwareRelease.target == target)
    found = db.session.scalars(q.order_by(FirmwareRelease.id)).all()
    if not found:
        raise ReleaseError(f"no release {version} (build it with `flask --app cloud firmware build`)")
    if len(found) > 1:
        raise ReleaseError(f"release {version} exists for {', '.join(r.target for r in found)}: say --target")
    return found[0]


def _in_share(lock_id: str, release: FirmwareRelease, percent: float) -> bool:
    """A stable pseudo-random pick per (lock, release): widening 10 % to 50 % keeps the first 10 %."""
    h = hashlib.sha256(f"{release.version}/{lock_id}".encode()).digest()
    return int.from_bytes(h[:4], "big") < percent / 100 * 2**32


def newer_releases(current: str | None) -> list[FirmwareRelease]:
    """Releases above a lock's version whose rollouts never halted, newest first (the lock page's choice)."""
    try:
        cur = parse_version(current) if current else ()
    except ReleaseError:
        cur = ()
    halted = sa.select(FirmwareRollout.release_id).where(FirmwareRollout.state == "halted")
    rels = db.session.scalars(sa.select(FirmwareRelease).where(FirmwareRelease.id.not_in(halted))).all()
    return sorted((r for r in rels if parse_version(r.version) > cur), key=lambda r: parse_version(r.version),
                  reverse=True)


def start_rollout(release: FirmwareRelease, *, lock_ids: list[str] | None = None, agency_id: int | None = None,
                  percent: float | None = None, halt_share: float = DEFAULT_HALT_SHARE) -> tuple[FirmwareRollout, list[str]]:
    """Target locks at release: the named ones, an agency's, or a stable share of the whole fleet. Locks
    already on the version are left alone. Returns the rollout and the lock ids it targets."""
    if sum(x is not None for x in (lock_ids, agency_id, percent)) != 1:
        raise ReleaseError("say which locks: --lock ID ..., --agency ID or --percent P")
    halted = db.session.scalar(sa.select(FirmwareRollout).where(FirmwareRollout.release_id == release.id,
                                                                 FirmwareRollout.state == "halted"))
    if halted is not None:
        raise ReleaseError(f"release {release.version} was halted ({halted.halted_reason}); build a fixed version")
    q = sa.select(Lock)
    if lock_ids is not None:
        ids = sorted(set(lock_ids))
        locks = db.session.scalars(q.where(Lock.id.in_(ids))).all()
        missing = set(ids) - {lk.id for lk in locks}
        if missing:
            raise ReleaseError(f"no such lock: {', '.join(sorted(missing))}")
        scope = "locks"
    elif agency_id is not None:
        locks = db.session.scalars(q.where(Lock.agency_id == agency_id)).all()
        scope = f"agency {agency_id}"
    else:
        if not 0 < percent <= 100:
            raise ReleaseError("--percent must be more than 0 and at most 100")
        locks = [lk for lk in db.session.scalars(q).all() if _in_share(lk.id, release, percent)]
        scope = f"percent {percent:g}"
    ro = FirmwareRollout(release=release, scope=scope, max_rollback_share=halt_share, state="active",
                         created_at=utcnow())
    db.session.add(ro)
    targeted = []
    for lk in locks:
        if lk.firmware_version == release.version:
            continue
        lf = db.session.get(LockFirmware, lk.id) or LockFirmware(lock_id=lk.id, rollbacks=0)
        lf.rollout = ro
        lf.release = release
        lf.state = "announced"
        lf.progress = 0
        lf.last_error = None
        lf.updated_at = utcnow()
        db.session.add(lf)
        targeted.append(lk.id)
    db.session.commit()
    log.info("rollout %s of %s: %d locks (%s)", ro.id, release.version, len(targeted), scope)
    return ro, targeted


def announcement(release: FirmwareRelease) -> dict:
    return {"v": 1, "t": "fw", "ver": release.version, "target": release.target, "size": release.size,
            "sha": release.sha256, "sig": release.signature, "flags": release.flags}


def due_announcements() -> list[tuple[str, int, dict]]:
    """(lock id, rollout id, announcement) for every online lock an active rollout has not reached yet."""
    from ..models import BridgeLockState

    rows = db.session.execute(
        sa.select(LockFirmware.lock_id, LockFirmware.rollout_id, FirmwareRelease)
        .join(FirmwareRelease, FirmwareRelease.id == LockFirmware.release_id)
        .join(FirmwareRollout, FirmwareRollout.id == LockFirmware.rollout_id)
        .join(BridgeLockState, BridgeLockState.lock_id == LockFirmware.lock_id)
        .where(LockFirmware.state == "announced", FirmwareRollout.state == "active",
               BridgeLockState.online.is_(True))).all()
    out = [(lid, rid, announcement(rel)) for lid, rid, rel in rows]
    db.session.commit()  # read only: end the transaction, the web's writers must not wait on it
    return out


def on_hello(lock_id: str, firmware: str | None, now: datetime | None = None) -> dict | None:
    """After a verified hello: the announcement to send when the lock should move to another release."""
    lf = db.session.get(LockFirmware, lock_id)
    if lf is None or lf.release is None:
        return None
    rel = lf.release
    if firmware == rel.version:
        if lf.state != "updated":
            lf.state = "updated"
            lf.progress = rel.size
            lf.updated_at = now or utcnow()
            db.session.flush()  # committed with the hello that reported it (the bridge's batch)
        return None
    if lf.state not in ACTIVE_STATES or lf.rollout is None or lf.rollout.state != "active":
        return None
    return announcement(rel)


def chunk(lock_id: str, version, off, length, now: datetime | None = None) -> dict | None:
    """A chunk request: the bytes of the release this lock is targeted at (and no other), or None."""
    lf = db.session.get(LockFirmware, lock_id)
    if (lf is None or lf.release is None or lf.release.version != version or lf.state not in ACTIVE_STATES
            or not isinstance(off, int) or not isinstance(length, int) or isinstance(off, bool)):
        return None
    rel = lf.release
    if not 0 <= off < rel.size or not 0 < length <= MAX_CHUNK:
        return None
    data = _bundle(rel)[off:off + length]
    if off >= lf.progress or lf.state != "downloading":
        lf.progress = off
        lf.state = "downloading"
        lf.updated_at = now or utcnow()
        db.session.commit()
    return {"v": 1, "t": "fwchunk", "ver": rel.version, "off": off, "d": base64.b64encode(data).decode()}


_BUNDLES: dict[str, bytes] = {}  # sha256 -> archive: a chunk request needs no 60 KB read from the database


def _bundle(rel: FirmwareRelease) -> bytes:
    data = _BUNDLES.get(rel.sha256)
    if data is None:
        if len(_BUNDLES) >= 4:
            _BUNDLES.pop(next(iter(_BUNDLES)))
        data = _BUNDLES[rel.sha256] = rel.data
    return data


def on_report(lock_id: str, body: dict, now: datetime | None = None) -> None:
    """A lock's fwstatus report: downloading, downloaded, trial, confirmed, refused (reason) or rolled_back
    (reason, rollbacks). Reports of a version the lock is not targeted at only count its rollbacks."""
    lf = db.session.get(LockFirmware, lock_id)
    if lf is None:
        lf = LockFirmware(lock_id=lock_id, rollbacks=0, state="idle", progress=0)
        db.session.add(lf)
    state = body.get("state")
    reason = body.get("reason")
    reason = str(reason)[:120] if reason is not None else None
    targeted = lf.release is not None and body.get("ver") == lf.release.version
    now = now or utcnow()
    if state == "rolled_back":
        n = body.get("rollbacks")
        if isinstance(n, int) and n > lf.rollbacks:
            lf.rollbacks = n
            lf.last_error = f"rolled back from {body.get('ver')}: {reason}"
            if targeted:
                lf.state = "rolled_back"
            _check_halt(lf.rollout)
    elif state == "refused" and targeted:
        if reason == "failed_before" and lf.state in ("refused", "rolled_back"):
            return  # the lock repeats why it will not take this version again: the first reason stands
        lf.state = "refused"
        lf.last_error = f"refused {body.get('ver')}: {reason}"
    elif state in ("downloaded", "trial") and targeted:  # fetched and hashed / running on trial
        lf.state = "staged"
        lf.progress = lf.release.size
    elif state == "confirmed" and targeted:
        lf.state = "updated"
        lf.progress = lf.release.size
    else:
        return
    lf.updated_at = now
    db.session.commit()


def _check_halt(ro: FirmwareRollout | None) -> None:
    if ro is None or ro.state != "active":
        return
    states = db.session.scalars(sa.select(LockFirmware.state).where(LockFirmware.rollout_id == ro.id)).all()
    if not states:
        return
    failed = sum(s == "rolled_back" for s in states)
    if failed / len(states) > ro.max_rollback_share:
        ro.state = "halted"
        ro.halted_reason = f"{failed} of {len(states)} locks rolled back (limit {ro.max_rollback_share:.0%})"
        db.session.execute(sa.update(LockFirmware).where(LockFirmware.rollout_id == ro.id,
                                                          LockFirmware.state.in_(ACTIVE_STATES))
                           .values(state="halted"))
        log.warning("rollout %s of %s halted: %s", ro.id, ro.release.version, ro.halted_reason)


def lock_json(lock_id: str, firmware_version: str | None) -> dict:
    """The firmware fields of a lock in the API and on the lock page."""
    lf = db.session.get(LockFirmware, lock_id)
    rel = lf.release if lf is not None else None
    return {
        "firmware_version": firmware_version,
        "firmware": {
            "target": rel.version if rel is not None else None,
            "state": lf.state if lf is not None else "idle",
            "progress": (round(lf.progress / rel.size, 3) if rel is not None and rel.size else None),
            "last_error": lf.last_error if lf is not None else None,
            "rollbacks": lf.rollbacks if lf is not None else 0,
            "rollout_halted": bool(lf is not None and lf.rollout is not None and lf.rollout.state == "halted"),
        },
    }
