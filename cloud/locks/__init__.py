"""Lock registry pages: list, register, lock page (status, access log, backup key on request)."""
from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, flash, g, redirect, render_template, request, session, url_for

from ..auth import login_required
from ..auth.roles import can, permission_required
from ..domain import DomainError, register_lock, reveal_backup_key
from ..extensions import db
from ..models import AuditEvent, BackupKeyRotation, Code, Lock, LockEvent
from ..scoping import agency_lock_or_404, agency_locks
from ..timeutil import to_epoch, utcnow, zone_names
from .forms import EmptyForm, LockForm

bp = Blueprint("locks", __name__, url_prefix="/locks")


@bp.get("/")
@login_required
def index():
    locks = db.session.scalars(agency_locks(g.user.agency_id, with_connection=True)
                               .order_by(Lock.name, Lock.id)).all()
    return render_template("locks/index.html", locks=locks, now=utcnow())


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
    return render_template("locks/show.html", lock=lock, events=events, codes=codes, audits=audits,
                           rotations=rotations, upcoming=upcoming, form=form, backup_key=backup_key, now=now)


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
