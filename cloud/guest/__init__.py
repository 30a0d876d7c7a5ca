"""The guest's page: the code, the dates, the address and how to use the keypad, in the code's language,
behind an unguessable signed link sent in the guest's email (no account)."""
from __future__ import annotations

from flask import Blueprint, abort, current_app, g, render_template
from itsdangerous import BadSignature, URLSafeSerializer

from ..extensions import db
from ..mailer import absolute_url
from ..models import Code
from ..timeutil import fmt_local, utcnow

bp = Blueprint("guest", __name__, url_prefix="/guest")


def _serializer() -> URLSafeSerializer:
    return URLSafeSerializer(current_app.config["SECRET_KEY"], salt="keydrop-guest")


def guest_link(code: Code) -> str:
    return absolute_url("guest.show", token=_serializer().dumps(code.id))


@bp.get("/<token>")
def show(token: str):
    try:
        code_id = _serializer().loads(token)
    except BadSignature:
        abort(404)
    code = db.session.get(Code, code_id) if isinstance(code_id, int) else None
    if code is None:
        abort(404)
    g.guest_locale = code.locale
    lock = code.lock
    body = render_template("guest/show.html", code=code, lock=lock, agency=lock.agency, page_lang=code.locale,
                           status=code.status(utcnow()), start_local=fmt_local(code.valid_from, lock.timezone),
                           end_local=fmt_local(code.valid_until, lock.timezone))
    # a private page: not cached, and its address never goes to another site
    return body, 200, {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Robots-Tag": "noindex"}
