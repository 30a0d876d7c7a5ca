"""The account page: one's own name, password, and API tokens (created with a label, shown once, revoked)."""
from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, abort, flash, g, redirect, render_template, url_for

from ..auth import login_required, login_session
from ..auth.forms import ChangePasswordForm
from ..auth.passwords import verify
from ..auth.roles import can, permission_required
from ..extensions import db
from ..locks.forms import EmptyForm
from ..models import ApiToken
from .forms import NameForm, TokenForm

bp = Blueprint("account", __name__, url_prefix="/account")


def _tokens():
    return db.session.scalars(sa.select(ApiToken).where(ApiToken.user_id == g.user.id)
                              .order_by(ApiToken.id.desc())).all()


def _page(*, name_form=None, password_form=None, token_form=None, new_token=None, status=200):
    user = g.user
    name_form = name_form or NameForm(data={"name": user.name})
    password_form = password_form or ChangePasswordForm(personal=(user.email, user.name, user.agency.name))
    token_form = token_form or TokenForm()
    body = render_template("account/index.html", name_form=name_form, password_form=password_form,
                           token_form=token_form, tokens=_tokens() if can(user, "manage_tokens") else [],
                           new_token=new_token, button=EmptyForm())
    return body, status, {"Cache-Control": "no-store"}


@bp.get("")
@login_required
def index():
    return _page()


@bp.post("/name")
@login_required
def name():
    form = NameForm()
    if not form.validate_on_submit():
        return _page(name_form=form, status=400)
    g.user.name = form.name.data.strip()
    db.session.commit()
    flash("Your name is saved.", "ok")
    return redirect(url_for("account.index"))


@bp.post("/password")
@login_required
def password():
    user = g.user
    form = ChangePasswordForm(personal=(user.email, user.name, user.agency.name))
    if form.validate_on_submit() and not verify(user, form.current.data):
        form.current.errors = [*form.current.errors, "This is not your current password."]
    elif form.validate_on_submit():
        user.set_password(form.password.data)  # every session of this person ends, on every device…
        db.session.commit()
        login_session(user)  # …except this one, which continues under the new password
        flash("Your password is changed; you were logged out everywhere else."
              + (" Your API tokens still work (revoke them below if needed)." if _tokens() else ""), "ok")
        return redirect(url_for("account.index"))
    return _page(password_form=form, status=400)


@bp.post("/tokens")
@login_required
@permission_required("manage_tokens")
def create_token():
    form = TokenForm()
    if not form.validate_on_submit():
        return _page(token_form=form, status=400)
    row, token = ApiToken.issue(g.user, label=form.label.data.strip())
    db.session.add(row)
    db.session.commit()
    # shown on this response only: only its hash is stored
    return _page(new_token=(row, token))


@bp.post("/tokens/<int:token_id>/revoke")
@login_required
@permission_required("manage_tokens")
def revoke_token(token_id: int):
    row = db.session.get(ApiToken, token_id) if 0 < token_id < 2 ** 31 else None
    if row is None or row.user_id != g.user.id:
        abort(404)
    if EmptyForm().validate_on_submit():
        label = row.label
        db.session.delete(row)
        db.session.commit()
        flash(f"Token “{label}” is revoked: programs using it are refused from now on.", "ok")
    return redirect(url_for("account.index") + "#tokens")
