"""Development mailbox: shows the mails captured by the local SMTP sink (aiosmtpd's Maildir handler).

Registered only when the configuration names the sink's Maildir (DEV_MAILBOX_DIR, from create_app's
overrides or the environment); production configurations never set it. `python -m tools.devstack` does.
"""
from __future__ import annotations

import email.policy
import email.utils
import mailbox
import os
from datetime import datetime, timezone

from flask import Blueprint, abort, current_app, render_template

bp = Blueprint("devmail", __name__, url_prefix="/dev/mailbox", template_folder="templates")


def init_app(app) -> bool:
    """Register the blueprint when DEV_MAILBOX_DIR is configured. Returns whether it was."""
    folder = app.config.get("DEV_MAILBOX_DIR") or os.environ.get("DEV_MAILBOX_DIR")
    if not folder:
        return False
    app.config["DEV_MAILBOX_DIR"] = folder
    app.register_blueprint(bp)
    app.logger.info("development mailbox enabled at /dev/mailbox/ (reading %s)", folder)
    return True


def _box() -> mailbox.Maildir:
    folder = current_app.config["DEV_MAILBOX_DIR"]
    for sub in ("tmp", "new", "cur"):  # the sink creates them with the first mail; the page may come first
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
    return mailbox.Maildir(folder, factory=None, create=False)


def _parse(raw_bytes: bytes):
    return email.message_from_bytes(raw_bytes, policy=email.policy.default)


def _when(msg, fallback: float) -> datetime:
    try:
        d = email.utils.parsedate_to_datetime(msg["Date"]) if msg["Date"] else None
    except (TypeError, ValueError):
        d = None
    if d is None:
        d = datetime.fromtimestamp(fallback, timezone.utc)
    if d.tzinfo is None:
        d = d.replace(tzinfo=timezone.utc)
    return d


def _summaries():
    box = _box()
    out = []
    for key in box.iterkeys():
        try:
            stored = box.get_message(key)  # MaildirMessage: get_date() is the delivery time
            msg = _parse(stored.as_bytes())
        except (KeyError, OSError):
            continue  # removed meanwhile
        received = stored.get_date()
        out.append({"key": key, "from": str(msg["From"] or ""), "to": str(msg["To"] or ""),
                    "subject": str(msg["Subject"] or "(no subject)"),
                    "date": _when(msg, received), "received": received})
    out.sort(key=lambda m: (m["received"], m["date"]), reverse=True)
    return out


def _body(msg, subtype: str) -> str | None:
    part = msg.get_body(preferencelist=(subtype,))
    if part is None:
        return None
    try:
        return part.get_content()
    except (LookupError, UnicodeError):
        return part.get_payload(decode=True).decode("utf-8", "replace")


@bp.get("/")
def index():
    return render_template("devmail/index.html", mails=_summaries(),
                           folder=current_app.config["DEV_MAILBOX_DIR"])


@bp.get("/<key>")
def show(key: str):
    box = _box()
    if "/" in key or key.startswith("."):
        abort(404)
    try:
        msg = _parse(box.get_bytes(key))
    except KeyError:
        abort(404)
    attachments = [p.get_filename() or p.get_content_type() for p in msg.iter_attachments()]
    return render_template("devmail/show.html", key=key, msg=msg, date=_when(msg, 0),
                           text=_body(msg, "plain"), html=_body(msg, "html"), attachments=attachments,
                           headers=[(k, str(v)) for k, v in msg.items()])


@bp.after_request
def _no_cache(resp):
    resp.headers["Cache-Control"] = "no-store"
    return resp
