"""Sign-up (confirmed by email), log in/out, password reset by email. Sessions end server-side: each carries
its user's session_version, which logout, a password change and removal bump."""
from __future__ import annotations

import functools
from datetime import datetime, timezone
from urllib.parse import urlsplit

import sqlalchemy as sa
from flask import Blueprint, current_app, flash, g, redirect, render_template, request, session, url_for
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from ..domain import DomainError, create_agency
from ..extensions import db, limiter
from ..mailer import absolute_url, enqueue
from ..models import User
from .forms import ForgotForm, LoginForm, ResetForm, SignupForm
from .passwords import verify

bp = Blueprint("auth", __name__)

SIGNUP_MAX_AGE_S = 24 * 3600


def load_user() -> None:
    g.user = None
    uid = session.get("uid")
    if uid is not None:
        user = db.session.get(User, uid)
        if user is not None and user.removed_at is None and session.get("sv") == user.session_version:
            g.user = user
        else:
            session.clear()


def login_required(view):
    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        if g.user is None:
            return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
        return view(*args, **kwargs)
    return wrapped


def login_session(user: User) -> None:
    session.clear()
    session.permanent = True
    session["uid"] = user.id
    session["sv"] = user.session_version


def end_all_sessions(user: User) -> None:
    """Every session of `user`, on every device, stops working (the caller commits)."""
    user.session_version = (user.session_version or 0) + 1


def _serializer(salt: str = "keydrop-password") -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=salt)


def password_token(user: User) -> str:
    return _serializer().dumps({"uid": user.id, "pf": user.password_fingerprint})


def password_link(user: User) -> str:
    return absolute_url("auth.reset", token=password_token(user))


def _user_from_token(token: str) -> User | None:
    max_age = max(current_app.config["PASSWORD_RESET_MAX_AGE_S"], current_app.config["INVITE_MAX_AGE_S"])
    try:
        data, issued = _serializer().loads(token, max_age=max_age, return_timestamp=True)
    except (SignatureExpired, BadSignature):
        return None
    user = db.session.get(User, data.get("uid")) if isinstance(data, dict) else None
    if user is None or user.removed_at is not None or data.get("pf") != user.password_fingerprint:
        return None  # already used (password changed since) or the person was removed
    # invitations (no password yet) live longer than resets
    age = (datetime.now(timezone.utc) - issued).total_seconds()
    if user.password_hash is not None and age > current_app.config["PASSWORD_RESET_MAX_AGE_S"]:
        return None
    return user


def safe_next(target: str | None) -> str:
    """`target` if it is a path on this site, else the locks page. Browsers drop tabs and newlines from URLs
    and read a backslash as a slash, so "/\\t/evil.example" or "/\\\\evil.example" would leave the site:
    any control character, backslash, scheme or host is refused."""
    default = url_for("locks.index")
    if not target or not target.startswith("/") or target.startswith("//"):
        return default
    if any(ch < " " or ch in "\\\x7f" for ch in target):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return default
    return target


def _signup_limit() -> str:
    return current_app.config["SIGNUP_RATE_LIMIT"]


def _login_limit() -> str:
    return current_app.config["LOGIN_RATE_LIMIT"]


def _find_user(email: str) -> User | None:
    return db.session.scalar(sa.select(User).where(User.email == User.normalize_email(email)))


@bp.route("/signup", methods=["GET", "POST"])
@limiter.limit(_signup_limit, methods=["POST"])
def signup():
    """The answer is the same whether or not the address has an account: the next step is in the mailbox
    (a link to finish creating the agency, or a reminder that an account exists)."""
    form = SignupForm()
    if form.validate_on_submit():
        email = User.normalize_email(form.email.data)
        if _find_user(email) is not None:
            enqueue(email, "signup_exists", "Your KeyDrop account", login_link=absolute_url("auth.login"),
                    forgot_link=absolute_url("auth.forgot"))
        else:
            token = _serializer("keydrop-signup").dumps({"name": form.agency_name.data.strip(), "email": email})
            enqueue(email, "signup_confirm", "Finish creating your agency on KeyDrop",
                    agency_name=form.agency_name.data.strip(),
                    link=absolute_url("auth.signup_confirm", token=token), hours=SIGNUP_MAX_AGE_S // 3600)
        db.session.commit()
        return render_template("auth/signup_sent.html", email=email)
    return render_template("auth/signup.html", form=form)


@bp.route("/signup/confirm/<token>", methods=["GET", "POST"])
@limiter.limit(_signup_limit, methods=["POST"])
def signup_confirm(token: str):
    try:
        data = _serializer("keydrop-signup").loads(token, max_age=SIGNUP_MAX_AGE_S)
    except (SignatureExpired, BadSignature):
        flash("This link has expired or is not valid. Sign up again.", "error")
        return redirect(url_for("auth.signup"))
    if _find_user(data["email"]) is not None:
        flash("This address already has an account: log in (or reset your password).", "ok")
        return redirect(url_for("auth.login"))
    form = ResetForm(personal=(data["email"], data["name"]))
    if form.validate_on_submit():
        try:
            _, owner = create_agency(name=data["name"], email=data["email"], password=form.password.data)
        except DomainError as exc:  # lost a race with the same link opened twice
            flash(exc.message, "error")
            return redirect(url_for("auth.login"))
        login_session(owner)
        flash("Welcome to KeyDrop. Register your first lock.", "ok")
        return redirect(url_for("locks.index"))
    return render_template("auth/reset.html", form=form, email=data["email"], agency_name=data["name"])


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(_login_limit, methods=["POST"])
def login():
    form = LoginForm()
    if form.validate_on_submit():
        user = _find_user(form.email.data)
        if verify(user, form.password.data):
            login_session(user)
            return redirect(safe_next(request.args.get("next")))
        flash("Wrong email or password.", "error")
    return render_template("auth/login.html", form=form)


@bp.post("/logout")
def logout():
    if g.user is not None:
        end_all_sessions(g.user)
        db.session.commit()
    session.clear()
    flash("You are logged out (on every device).", "ok")
    return redirect(url_for("auth.login"))


@bp.route("/password/forgot", methods=["GET", "POST"])
@limiter.limit(_login_limit, methods=["POST"])
def forgot():
    """The same answer and the same work (one mail queued) whether or not the address has an account: an
    address without one is told so in its mailbox, as sign-up does."""
    form = ForgotForm()
    if form.validate_on_submit():
        email = User.normalize_email(form.email.data)
        user = _find_user(email)
        if user is not None and user.removed_at is None:
            enqueue(user.email, "reset", "Reset your KeyDrop password", user=user, link=password_link(user),
                    minutes=current_app.config["PASSWORD_RESET_MAX_AGE_S"] // 60)
        else:
            enqueue(email, "reset_unknown", "Reset your KeyDrop password", email=email,
                    signup_link=absolute_url("auth.signup"))
        db.session.commit()
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
    form = ResetForm(personal=(user.email, user.name, user.agency.name))
    if form.validate_on_submit():
        user.set_password(form.password.data)  # ends every other session (session_version)
        db.session.commit()
        login_session(user)
        flash("Your password is set.", "ok")
        return redirect(url_for("locks.index"))
    return render_template("auth/reset.html", form=form, email=user.email, agency_name=None)

