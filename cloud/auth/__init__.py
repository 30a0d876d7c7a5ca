"""Sign-up, log in/out, password reset by email, staff invitations."""
from __future__ import annotations

import functools

import sqlalchemy as sa
from flask import (Blueprint, abort, current_app, flash, g, redirect, render_template, request, session,
                   url_for)
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from ..domain import DomainError, create_agency, invite_staff
from ..extensions import db, limiter
from ..mailer import enqueue
from ..models import User
from .forms import ForgotForm, InviteForm, LoginForm, ResetForm, SignupForm

bp = Blueprint("auth", __name__)


def load_user() -> None:
    g.user = None
    uid = session.get("uid")
    if uid is not None:
        user = db.session.get(User, uid)
        # the session dies with a password change (fingerprint mismatch)
        if user is not None and session.get("pf") == user.password_fingerprint:
            g.user = user
        else:
            session.clear()


def login_required(view):
    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        if g.user is None:
            return redirect(url_for("auth.login", next=request.path))
        return view(*args, **kwargs)
    return wrapped


def owner_required(view):
    @functools.wraps(view)
    @login_required
    def wrapped(*args, **kwargs):
        if not g.user.is_owner:
            abort(404)
        return view(*args, **kwargs)
    return wrapped


def _login(user: User) -> None:
    session.clear()
    session.permanent = True
    session["uid"] = user.id
    session["pf"] = user.password_fingerprint


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt="keydrop-password")


def password_token(user: User) -> str:
    return _serializer().dumps({"uid": user.id, "pf": user.password_fingerprint})


def password_link(user: User) -> str:
    base = current_app.config["PUBLIC_BASE_URL"].rstrip("/")
    return base + url_for("auth.reset", token=password_token(user))


def _user_from_token(token: str) -> User | None:
    max_age = max(current_app.config["PASSWORD_RESET_MAX_AGE_S"], current_app.config["INVITE_MAX_AGE_S"])
    try:
        data, issued = _serializer().loads(token, max_age=max_age, return_timestamp=True)
    except (SignatureExpired, BadSignature):
        return None
    user = db.session.get(User, data.get("uid"))
    if user is None or data.get("pf") != user.password_fingerprint:
        return None  # already used (password changed since)
    # invitations (no password yet) live longer than resets
    from datetime import datetime, timezone
    age = (datetime.now(timezone.utc) - issued).total_seconds()
    if user.password_hash is not None and age > current_app.config["PASSWORD_RESET_MAX_AGE_S"]:
        return None
    return user


def _safe_next(target: str | None) -> str:
    if target and target.startswith("/") and not target.startswith("//"):
        return target
    return url_for("locks.index")


def _signup_limit() -> str:
    return current_app.config["SIGNUP_RATE_LIMIT"]


def _login_limit() -> str:
    return current_app.config["LOGIN_RATE_LIMIT"]


@bp.route("/signup", methods=["GET", "POST"])
@limiter.limit(_signup_limit, methods=["POST"])
def signup():
    form = SignupForm()
    if form.validate_on_submit():
        try:
            _, owner = create_agency(name=form.agency_name.data, email=form.email.data,
                                     password=form.password.data)
        except DomainError as exc:
            flash(exc.message, "error")
        else:
            _login(owner)
            flash("Welcome to KeyDrop. Register your first lock.", "ok")
            return redirect(url_for("locks.index"))
    return render_template("auth/signup.html", form=form)


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(_login_limit, methods=["POST"])
def login():
    form = LoginForm()
    if form.validate_on_submit():
        user = db.session.scalar(sa.select(User).where(User.email == User.normalize_email(form.email.data)))
        if user is not None and user.check_password(form.password.data):
            _login(user)
            return redirect(_safe_next(request.args.get("next")))
        flash("Wrong email or password.", "error")
    return render_template("auth/login.html", form=form)


@bp.post("/logout")
def logout():
    session.clear()
    flash("You are logged out.", "ok")
    return redirect(url_for("auth.login"))


@bp.route("/password/forgot", methods=["GET", "POST"])
@limiter.limit(_login_limit, methods=["POST"])
def forgot():
    form = ForgotForm()
    if form.validate_on_submit():
        user = db.session.scalar(sa.select(User).where(User.email == User.normalize_email(form.email.data)))
        if user is not None:
            enqueue(user.email, "reset", "Reset your KeyDrop password", user=user, link=password_link(user),
                    minutes=current_app.config["PASSWORD_RESET_MAX_AGE_S"] // 60)
            db.session.commit()
        # same answer whether or not the account exists
        flash("If an account exists for that address, we sent it a link to choose a new password.", "ok")
        return redirect(url_for("auth.login"))
    return render_template("auth/forgot.html", form=form)


@bp.route("/password/reset/<token>", methods=["GET", "POST"])
@limiter.limit(_login_limit, methods=["POST"])
def reset(token: str):
    user = _user_from_token(token)
    if user is None:
        flash("This link has expired or was already used. Ask for a new one.", "error")
        return redirect(url_for("auth.forgot"))
    form = ResetForm()
    if form.validate_on_submit():
        user.set_password(form.password.data)
        db.session.commit()
        _login(user)
        flash("Your password is set.", "ok")
        return redirect(url_for("locks.index"))
    return render_template("auth/reset.html", form=form, user=user)


@bp.route("/staff", methods=["GET", "POST"])
@owner_required
def staff():
    form = InviteForm()
    if form.validate_on_submit():
        try:
            user = invite_staff(g.user, email=form.email.data, name=form.name.data or "", link=password_link)
        except DomainError as exc:
            flash(exc.message, "error")
        else:
            flash(f"Invitation sent to {user.email}.", "ok")
            return redirect(url_for("auth.staff"))
    members = db.session.scalars(sa.select(User).where(User.agency_id == g.user.agency_id)
                                 .order_by(User.id)).all()
    return render_template("auth/staff.html", form=form, members=members)
