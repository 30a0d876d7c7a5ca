"""Lock registry pages: list, register, edit, decommission, lock page (status, access log, backup key on
request), calendar."""
from __future__ import annotations

from datetime import date, datetime, timedelta

import sqlalchemy as sa
from flask import Blueprint, flash, g, redirect, render_template, request, session, url_for

from ..auth import login_required
from ..auth.roles import can, permission_required
from ..domain import DomainError, decommission_lock, register_lock, reveal_backup_key, update_lock
from ..extensions import db
from ..firmware import rollout as fw_rollout
from ..firmware.release import ReleaseError
from ..models import AuditEvent, BackupKeyRotation, Code, Lock, LockEvent
from ..scoping import agency_lock_or_404, agency_locks
from ..timeutil import aware, to_epoch, utcnow, zone, zone_names
from . import calendar
from .forms import EmptyForm, LockEditForm, LockForm

bp = Blueprint("locks", __name__, url_prefix="/locks")


@bp.get("/")
@login_required
def index():
    locks = db.session.scalars(agency_locks(g.user.agency_id, with_connection=True)
                               .order_by(Lock.name, Lock.id)).all()
    return render_template("locks/index.html", locks=[lk for lk in locks if not lk.is_decommissioned],
                           retired=[lk for lk in locks if lk.is_decommissioned], now=utcnow())


@bp.route("/new", methods=["GET", "POST"])
@login_required
def new():
    form = LockForm()
    if form.validate_on_submit():
        try:
            lock = register_lock(g.user.agency, mac=form.mac.data, name=form.name.data,
                                 address=form.address.data, timezone=form.timezone.data.strip(), by=g.user)
        except DomainError as exc:
            form.mac.errors = [*form.mac.errors, exc.message]
        else:
            flash(f"Lock “{lock.name}” registered. It becomes active when it first connects.", "ok")
            return redirect(url_for("locks.show", lock_id=lock.id))
    return render_template("locks/new.html", form=form, zones=zone_names())


def _lock_page(lock: Lock, form: EmptyForm, backup_key: str | None):
    now = utcnow()
    events = db.session.scalars(sa.select(LockEvent).where(LockEvent.lock_id == lock.id)
                                .order_by(LockEvent.seq.desc()).limit(100)).all()
    code_ids = [e.code_id for e in events if e.code_id is not None]
    codes = {c.id: c for c in db.session.scalars(sa.select(Code).where(Code.lock_id == lock.id,
                                                                         Code.id.in_(code_ids)))}
    audits = db.session.scalars(sa.select(AuditEvent).where(
        AuditEvent.lock_id == lock.id, AuditEvent.agency_id == lock.agency_id,
        AuditEvent.action.in_(["reveal_backup_key", "provision"])).order_by(AuditEvent.id.desc()).limit(20)).all()
    rotations = db.session.scalars(sa.select(BackupKeyRotation).where(BackupKeyRotation.lock_id == lock.id)
                                   .order_by(BackupKeyRotation.id.desc()).limit(10)).all()
    upcoming = db.session.scalars(sa.select(Code).where(
        Code.lock_id == lock.id, Code.revoked_at.is_(None), Code.valid_until > now)
        .order_by(Code.valid_from).limit(20)).all()
    firmware = fw_rollout.lock_json(lock.id, lock.firmware_version)["firmware"]
    releases = fw_rollout.newer_releases(lock.firmware_version) if can(g.user, "manage_locks") else []
    return render_template("locks/show.html", lock=lock, events=events, codes=codes, audits=audits,
                           rotations=rotations, upcoming=upcoming, form=form, backup_key=backup_key, now=now,
                           backup=_backup_status(lock, rotations), firmware=firmware, releases=releases)


# The lock asks for a new backup key this long after the current one's first use (docs/protocol.md).
BACKUP_REPLACED_AFTER = timedelta(hours=24)


def _backup_status(lock: Lock, rotations: list[BackupKeyRotation]) -> dict:
    """What the backup card says: when the current key was first used (from the lock's log), when it is due
    to be replaced, or that a replacement is being installed."""
    pending = next((r for r in rotations if r.installed_at is None), None)
    if pending is not None:
        return {"pending": pending, "first_used": pending.first_used_at, "replace_at": None}
    last = next((r.installed_at for r in rotations if r.installed_at is not None), None)
    q = sa.select(sa.func.min(sa.func.coalesce(LockEvent.t, LockEvent.received_at))).where(
        LockEvent.lock_id == lock.id, LockEvent.kind.in_(["opened_backup", "backup_first_use"]))
    if last is not None:
        q = q.where(LockEvent.received_at > last)
    first_used = aware(db.session.scalar(q))
    return {"pending": None, "first_used": first_used,
            "replace_at": first_used + BACKUP_REPLACED_AFTER if first_used else None}


# After a reveal, the lock page shows the key for this long without recording another reveal (reloads).
REVEAL_WINDOW_S = 300


@bp.get("/<lock_id>")
@login_required
def show(lock_id: str):
    lock = agency_lock_or_404(g.user.agency_id, lock_id)
    granted = session.get("revealed") or {}
    shown = (can(g.user, "reveal_backup_key") and granted.get("lock") == lock.id
             and granted.get("until", 0) > to_epoch(utcnow()) and not lock.is_decommissioned)
    body = _lock_page(lock, EmptyForm(), lock.backup_key if shown else None)
    # the key is never in a URL, the session cookie or a cache; the page holding it is not stored
    return body, 200, {"Cache-Control": "no-store"}


@bp.post("/<lock_id>/backup-key")
@login_required
@permission_required("reveal_backup_key")
def reveal(lock_id: str):
    """POST-redirect-GET: the reveal is recorded once; reloading the page that shows the key records nothing."""
    lock = agency_lock_or_404(g.user.agency_id, lock_id)
    if EmptyForm().validate_on_submit() and not lock.is_decommissioned:
        reveal_backup_key(lock, by=g.user, remote_addr=request.remote_addr)
        session["revealed"] = {"lock": lock.id, "until": to_epoch(utcnow()) + REVEAL_WINDOW_S}
    return redirect(url_for("locks.show", lock_id=lock.id) + "#backup")


@bp.route("/<lock_id>/edit", methods=["GET", "POST"])
@login_required
@permission_required("manage_locks")
def edit(lock_id: str):
    lock = agency_lock_or_404(g.user.agency_id, lock_id)
    if lock.is_decommissioned:
        flash("This lock is decommissioned; its details are kept as they were.", "error")
        return redirect(url_for("locks.show", lock_id=lock.id))
    form = LockEditForm(obj=lock)
    if form.validate_on_submit():
        try:
            update_lock(lock, name=form.name.data, address=form.address.data, timezone=form.timezone.data.strip(),
                        checkin_time=form.checkin_time.data, checkout_time=form.checkout_time.data)
        except DomainError as exc:
            flash(exc.message, "error")
        else:
            flash("The lock's details are saved.", "ok")
            return redirect(url_for("locks.show", lock_id=lock.id))
    return render_template("locks/edit.html", form=form, lock=lock, zones=zone_names(), button=EmptyForm())


@bp.post("/<lock_id>/decommission")
@login_required
@permission_required("manage_locks")
def decommission(lock_id: str):
    lock = agency_lock_or_404(g.user.agency_id, lock_id)
    if not EmptyForm().validate_on_submit():
        return redirect(url_for("locks.edit", lock_id=lock.id))
    name, mac = lock.name, lock.mac_display
    archived = decommission_lock(lock, by=g.user)
    flash(f"“{name}” is decommissioned: its codes are revoked, it can no longer connect, and {mac} can be "
          "registered again. Its history stays here.", "ok")
    return redirect(url_for("locks.show", lock_id=archived.id))


@bp.get("/<lock_id>/calendar")
@login_required
def calendar_view(lock_id: str):
    lock = agency_lock_or_404(g.user.agency_id, lock_id)
    today = utcnow().astimezone(zone(lock.timezone)).date()
    try:
        first = datetime.strptime(request.args.get("from", ""), "%Y-%m-%d").date()
    except ValueError:
        first = today
    first = min(max(first, date(2000, 1, 3)), date(2100, 1, 1))  # a Monday; beyond, nothing to show
    weeks = calendar.weeks(lock, first)
    step = timedelta(weeks=calendar.WEEKS)
    return render_template("locks/calendar.html", lock=lock, weeks=weeks, today=today,
                           prev=(weeks[0].days[0] - step).isoformat(), next=(weeks[0].days[0] + step).isoformat(),
                           now=utcnow())


@bp.post("/<lock_id>/firmware")
@login_required
@permission_required("manage_locks")
def update_firmware(lock_id: str):
    """The owner (or a manager) moves this one lock to a newer release the operator built."""
    lock = agency_lock_or_404(g.user.agency_id, lock_id)
    if EmptyForm().validate_on_submit() and not lock.is_decommissioned:
        wanted = request.form.get("release", type=int)
        rel = next((r for r in fw_rollout.newer_releases(lock.firmware_version) if r.id == wanted), None)
        if rel is None:
            flash("Choose one of the releases offered for this lock.", "error")
        else:
            try:
                fw_rollout.start_rollout(rel, lock_ids=[lock.id])
                flash(f"{lock.name} will update to {rel.version} at its next connection.", "success")
            except ReleaseError as exc:
                flash(str(exc), "error")
    return redirect(url_for("locks.show", lock_id=lock.id) + "#firmware")
