"""The agency cloud's app factory: create_app() wires the configuration, extensions, blueprints, the checks
every request and response passes, and the `flask --app cloud …` commands (cli.py)."""
from __future__ import annotations

import logging

from flask import Flask, g, jsonify, render_template, request
from flask.json.provider import DefaultJSONProvider

from . import config as config_module
from .extensions import csrf, db, limiter, mail, migrate
from .timeutil import fmt_local


def create_app(config_overrides: dict | None = None) -> Flask:
    app = Flask(__name__)
    app.json = _JSONProvider(app)
    app.config.update(config_module.from_environment())
    if config_overrides:
        app.config.update(config_overrides)
    if not app.logger.handlers or app.debug:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    if app.config.get("SECRET_KEY_IS_RANDOM") and not app.testing:
        logging.getLogger("keydrop").warning(
            "SECRET_KEY is not set: using a random key (sessions and reset links die with this process)")

    from . import dbbusy
    dbbusy.init_app(app)  # before the engine exists: its SQLite busy timeout
    db.init_app(app)
    migrate.init_app(app, db, directory=app.config.get("MIGRATIONS_DIR") or _migrations_dir(),
                     render_as_batch=True)
    mail.init_app(app)
    limiter.init_app(app)
    csrf.init_app(app)

    from . import models  # noqa: F401  (register the tables)
    from .api import bp as api_bp
    from .auth import bp as auth_bp, load_user, staff_views  # noqa: F401  (staff_views adds the staff pages)
    from .codes import bp as codes_bp
    from .automation_web import bp as automation_bp
    from .feeds.views import bp as feeds_bp
    from .locks import bp as locks_bp

    from .account import bp as account_bp
    from .auth.roles import ROLE_LABELS, can

    app.before_request(_refuse_nul_characters)
    app.before_request(load_user)
    app.after_request(_security_headers)
    app.register_blueprint(auth_bp)
    app.register_blueprint(account_bp)
    from .guest import bp as guest_bp
    from .i18n import init_app as init_i18n
    init_i18n(app)
    app.register_blueprint(guest_bp)
    app.register_blueprint(locks_bp)
    app.register_blueprint(codes_bp)
    app.register_blueprint(feeds_bp)
    app.register_blueprint(automation_bp)
    app.register_blueprint(api_bp)
    csrf.exempt(api_bp)  # token auth, no cookies
    from .devmail import init_app as init_devmail
    init_devmail(app)  # dev-only mailbox page, only when DEV_MAILBOX_DIR is configured (tools/devstack)

    app.jinja_env.filters["local"] = fmt_local
    from .timeutil import fmt_duration
    app.jinja_env.filters["duration"] = fmt_duration
    from .wording import code_place, event_words, sync_words
    app.jinja_env.filters.update(event_words=event_words, sync_words=sync_words, code_place=code_place)
    from .timeutil import DEFAULT_TIMEZONE
    from .mailer import absolute_url
    app.jinja_env.globals.update(can=can, ROLE_LABELS=ROLE_LABELS, DEFAULT_TZ=DEFAULT_TIMEZONE,
                                 absolute_url=absolute_url)

    @app.get("/")
    def index():
        from flask import redirect, url_for
        return redirect(url_for("locks.index" if g.user else "auth.login"))

    @app.get("/healthz")
    def healthz():
        return jsonify(ok=True)

    from werkzeug.exceptions import HTTPException

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException):
        if request.path.startswith("/api/"):
            return jsonify(message=HTTP_MESSAGES.get(e.code, e.description)), e.code
        if e.code == 404:
            return render_template("error.html", code=404, message="This page does not exist."), 404
        return (render_template("error.html", code=e.code, message=HTTP_MESSAGES.get(e.code, e.description)),
                e.code, e.get_headers())  # (keeps e.g. the Allow header of a 405)

    @app.errorhandler(429)
    def too_many(e):
        if request.path.startswith("/api/"):
            return jsonify(message="Too many attempts; wait a minute and try again."), 429
        return render_template("error.html", code=429,
                               message="Too many attempts; wait a minute and try again."), 429

    from flask_wtf.csrf import CSRFError

    @app.errorhandler(CSRFError)
    def csrf_error(e):
        return render_template("error.html", code=400,
                               message="The form expired or was not sent from this site; reload and retry."), 400

    from .cli import register as register_cli
    register_cli(app)
    return app


# Scripts and styles come only from /static: no inline code, so an injected <script> or style attribute
# does nothing. The dev mailbox shows mails as they are sent (inline styles) inside a sandboxed frame.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
DEV_MAILBOX_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-src 'self'; "
                   "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def _security_headers(response):
    """Headers on every response, pages, API, static files and errors alike."""
    h = response.headers
    h.setdefault("Content-Security-Policy", DEV_MAILBOX_CSP if request.blueprint == "devmail" else CSP)
    h.setdefault("X-Frame-Options", "DENY")
    h.setdefault("X-Content-Type-Options", "nosniff")
    h.setdefault("Referrer-Policy", "same-origin")
    return response


# What a user reads for these statuses, on pages and in the API (`{"message": …}`).
HTTP_MESSAGES = {404: "Not found.", 405: "Method not allowed.",
                 413: "The request is too large."}
NUL_MESSAGE = "Text may not contain NUL characters (\\u0000)."


def _has_nul(value) -> bool:
    """Whether a string anywhere in value (str, or lists/dicts of them as JSON gives) holds a NUL."""
    stack = [value]
    while stack:  # iterative: a JSON body can nest as deep as the parser allows
        v = stack.pop()
        if isinstance(v, str):
            if "\x00" in v:
                return True
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return False


class _JSONProvider(DefaultJSONProvider):
    def loads(self, s, **kwargs):
        try:
            return super().loads(s, **kwargs)
        except RecursionError:  # absurdly nested arrays/objects: invalid input (400), not a server error
            raise ValueError("JSON nested too deeply") from None


def _refuse_nul_characters():
    """PostgreSQL text cannot hold NUL characters (psycopg refuses them with an error), and no field of ours
    needs one: refuse them up front, in the path, the query string, a form, HTTP Basic credentials or a JSON
    body, with a 400 that says why instead of a server error."""
    from flask import abort
    texts = [request.path, *(x for pair in request.args.items(multi=True) for x in pair)]
    if request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        texts += [x for pair in request.form.items(multi=True) for x in pair]
    auth = request.authorization
    if auth is not None and auth.type == "basic":
        texts += [auth.username or "", auth.password or ""]
    if _has_nul(texts) or (request.is_json and _has_nul(request.get_json(silent=True))):
        abort(400, description=NUL_MESSAGE)


def _migrations_dir() -> str:
    import os
    return os.path.join(os.path.dirname(__file__), "migrations")
