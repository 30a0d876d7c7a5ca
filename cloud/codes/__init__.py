"""Code generation, history (filters, CSV export) and revocation."""
from __future__ import annotations

import csv
import io
from datetime import timedelta

import sqlalchemy as sa
from flask import Blueprint, Response, flash, g, redirect, render_template, request, url_for

from ..auth import login_required
from ..domain import DomainError, generate_code, overlapping_codes, revoke_code, set_guest
from ..extensions import db
from ..locks.forms import EmptyForm
from ..models import Code, Lock
from ..scoping import BadFilter, agency_code_or_404, agency_lock_or_404, agency_locks, code_history
from ..timeutil import OutOfRange, fmt_local, local_to_utc, utcnow, zone
from .forms import CodeForm, GuestForm

bp = Blueprint("codes", __name__)


@bp.route("/locks/<lock_id>/codes/new", methods=["GET", "POST"])
@login_required
def new(lock_id: str):
    lock = agency_lock_or_404(g.user.agency_id, lock_id)
    form = CodeForm()
    if request.method == "GET":  # suggest tomorrow → the day after, at the lock's usual check-in/out times
        today = utcnow().astimezone(zone(lock.timezone)).replace(tzinfo=None, second=0, microsecond=0)
        cin, cout = lock.checkin_time, lock.checkout_time
        form.check_in.data = (today + timedelta(days=1)).replace(hour=cin.hour, minute=cin.minute)
        form.check_out.data = (today + timedelta(days=2)).replace(hour=cout.hour, minute=cout.minute)
    if not lock.is_active:
        flash("This lock has not come online yet: codes can be generated once it is active.", "error")
        return render_template("codes/new.html", form=form, lock=lock, code=None), (409 if request.method == "POST" else 200)
    if form.validate_on_submit():
        try:
            code = generate_code(lock, valid_from=local_to_utc(form.check_in.data, lock.timezone),
                                 valid_until=local_to_utc(form.check_out.data, lock.timezone), by=g.user,
                                 customer_name=form.customer_name.data, customer_email=form.customer_email.data,
                                 locale=form.locale.data)
        except DomainError as exc:
            flash(exc.message, "error")
        except OutOfRange as exc:
            flash(str(exc), "error")
        else:
            sent = "you" + (" and the guest" if code.customer_email else "")
            flash(f"Code {code.code} created for {lock.name}; it is emailed to {sent}.", "ok")
            for other in overlapping_codes(code):
                flash(f"Note: this period overlaps code {other.code}"
                      f"{' (' + other.customer_name + ')' if other.customer_name else ''}, "
                      f"{fmt_local(other.valid_from, lock.timezone)} → {fmt_local(other.valid_until, lock.timezone)}. "
                      "Both codes open the door; revoke one in the history if this is a double booking.", "warn")
            return render_template("codes/new.html", form=CodeForm(formdata=None), lock=lock, code=code)
    return render_template("codes/new.html", form=form, lock=lock, code=None)


FILTERS = ("lock", "status", "customer", "since", "until")


def _filtered(args) -> sa.Select:
    """History query from the filters in the query string (scoped to the caller's agency).
    Raises BadFilter (scoping.code_history) for a value it cannot apply."""
    f = {key: (args.get(key) or "").strip() for key in FILTERS}
    q = code_history(g.user.agency_id, lock_id=f["lock"], status=f["status"], customer=f["customer"],
                     since=f["since"], until=f["until"])
    return q.order_by(Code.created_at.desc(), Code.id.desc())


@bp.get("/codes/")
@login_required
def history():
    locks = db.session.scalars(agency_locks(g.user.agency_id).order_by(Lock.name)).all()
    f = {key: request.args.get(key, "") for key in FILTERS}
    try:
        codes, error, status = db.session.scalars(_filtered(request.args).limit(500)).all(), None, 200
    except BadFilter as exc:  # the filters as typed and what is wrong, no list
        codes, error, status = [], str(exc), 400
    return render_template("codes/history.html", codes=codes, locks=locks, f=f, statuses=Code.STATUSES,
                           now=utcnow(), form=EmptyForm(), filter_error=error), status


@bp.get("/codes/export.csv")
@login_required
def export():
    try:
        q = _filtered(request.args)
    except BadFilter as exc:  # never export more than asked for: refuse instead of dropping the filter
        return Response(f"{exc}\n", status=400, mimetype="text/plain")
    now = utcnow()
    buf = io.StringIO()
    buf.write("\ufeff")  # UTF-8 byte order mark: spreadsheet programs then read accents right
    w = csv.writer(buf)
    w.writerow(["id", "lock_id", "lock_name", "code", "status", "on_lock", "valid_from_utc", "valid_until_utc",
                "valid_from_local", "valid_until_local", "time_zone", "customer_name", "customer_email",
                "generated_by", "generated_at_utc", "revoked_at_utc"])
    for c in db.session.scalars(q):
        w.writerow([c.id, c.lock_id, _csv_safe(c.lock.name), c.code, c.status(now), c.on_lock,
                    c.valid_from.isoformat(), c.valid_until.isoformat(),
                    fmt_local(c.valid_from, c.lock.timezone), fmt_local(c.valid_until, c.lock.timezone),
                    c.lock.timezone, _csv_safe(c.customer_name or ""), _csv_safe(c.customer_email or ""),
                    _csv_safe(c.created_by.email) if c.created_by else "", c.created_at.isoformat(),
                    c.revoked_at.isoformat() if c.revoked_at else ""])
    name = f"keydrop-codes-{now:%Y%m%d-%H%M}.csv"
    return Response(buf.getvalue(), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


def _csv_safe(value: str) -> str:
    """Neutralise spreadsheet formulas in user-entered text (CSV injection)."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


@bp.post("/codes/<int:code_id>/revoke")
@login_required
def revoke(code_id: int):
    code = agency_code_or_404(g.user.agency_id, code_id)
    if EmptyForm().validate_on_submit():
        revoke_code(code, by=g.user)
        flash(f"Code {code.code} on {code.lock.name} is revoked.", "ok")
    return redirect(request.form.get("next") if (request.form.get("next") or "").startswith("/codes/")
                    else url_for("codes.history"))


@bp.route("/codes/<int:code_id>/guest", methods=["GET", "POST"])
@login_required
def guest(code_id: int):
    """Add the guest's email to a code (feeds rarely carry one) and send them their copy."""
    code = agency_code_or_404(g.user.agency_id, code_id)
    form = GuestForm(obj=code) if request.method == "GET" else GuestForm()
    if form.validate_on_submit():
        try:
            set_guest(code, email=form.customer_email.data, name=form.customer_name.data or "", send=True)
        except DomainError as exc:
            flash(exc.message, "error")
        else:
            flash(f"Code {code.code} sent to {code.customer_email}.", "ok")
            return redirect(url_for("feeds.show", lock_id=code.lock_id) if code.source == "calendar"
                            else url_for("codes.history", lock=code.lock_id))
    return render_template("codes/guest.html", form=form, code=code)
