"""The staff page: invite with a role, change a role, remove someone, send an invitation again."""
from __future__ import annotations

from flask import abort, flash, g, redirect, render_template, request, url_for

from ..domain import DomainError
from ..extensions import db
from ..locks.forms import EmptyForm
from ..models import User
from ..staff import invite_staff, members, remove_member, resend_invite, set_role
from . import bp, login_required, password_link
from .forms import InviteForm, RoleForm
from .roles import permission_required


def _member_or_404(user_id: int) -> User:
    member = db.session.get(User, user_id) if 0 < user_id < 2 ** 31 else None
    if member is None or member.agency_id != g.user.agency_id or member.removed_at is not None:
        abort(404)
    return member


@bp.route("/staff", methods=["GET", "POST"])
@login_required
@permission_required("manage_staff")
def staff():
    form = InviteForm()
    if form.validate_on_submit():
        try:  # the same answer when the address has an account elsewhere (it gets a notice instead)
            invite_staff(g.user, email=form.email.data, name=form.name.data or "", role=form.role.data,
                         link=password_link)
        except DomainError as exc:
            form.email.errors = [*form.email.errors, exc.message]
        else:
            flash(f"Invitation sent to {User.normalize_email(form.email.data)}.", "ok")
            return redirect(url_for("auth.staff"))
    return render_template("auth/staff.html", form=form, members=members(g.user.agency_id),
                           role_form=RoleForm(), button=EmptyForm())


@bp.post("/staff/<int:user_id>/role")
@login_required
@permission_required("manage_staff")
def staff_role(user_id: int):
    member = _member_or_404(user_id)
    form = RoleForm()
    if form.is_submitted():  # set_role says what is wrong with a role that is not offered
        try:
            set_role(g.user, member, request.form.get("role", ""))
        except DomainError as exc:
            flash(exc.message, "error")
        else:
            flash(f"{member.name or member.email} is now {member.role}.", "ok")
    return redirect(url_for("auth.staff"))


def _on_member(user_id: int, action, done: str):
    """A POST button on a member's row: run action(actor, member), say `done` (formatted with the member)."""
    member = _member_or_404(user_id)
    if EmptyForm().validate_on_submit():
        try:
            action(g.user, member)
        except DomainError as exc:
            flash(exc.message, "error")
        else:
            flash(done.format(email=member.email), "ok")
    return redirect(url_for("auth.staff"))


@bp.post("/staff/<int:user_id>/remove")
@login_required
@permission_required("manage_staff")
def staff_remove(user_id: int):
    return _on_member(user_id, remove_member, "{email} was removed: they can no longer log in.")


@bp.post("/staff/<int:user_id>/resend")
@login_required
@permission_required("manage_staff")
def staff_resend(user_id: int):
    return _on_member(user_id, lambda actor, member: resend_invite(actor, member, link=password_link),
                      "Invitation sent again to {email}.")
