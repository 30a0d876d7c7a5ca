"""A busy database: how long a connection waits for another process's write (SQLite), and the answer a request
gets when the database stays busy past that (503 with Retry-After, never a 500)."""
from __future__ import annotations

import logging

from flask import Flask, jsonify, render_template, request
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError

from .extensions import db

log = logging.getLogger("keydrop")

RETRY_AFTER_S = 2
MESSAGE = "The service is busy; retry in a few seconds."
# SQLite: another connection holds the write lock past the busy timeout.
_SQLITE_BUSY = ("database is locked", "database table is locked", "database is busy")
# PostgreSQL: lock_not_available, serialization_failure, deadlock_detected (a retry succeeds).
_PG_RETRYABLE = {"55P03", "40001", "40P01"}


def engine_options(uri: str, options: dict, busy_timeout: float) -> dict:
    """The engine options with, on SQLite, the time a statement waits for another process's write lock (the
    bridge, the mailer and the web share one file; sqlite3's default is 5 s)."""
    if make_url(uri).get_backend_name() != "sqlite":
        return options
    out = dict(options)
    out["connect_args"] = {**options.get("connect_args", {}), "timeout": busy_timeout}
    return out


def retryable(exc: DBAPIError) -> bool:
    orig = exc.orig
    if getattr(orig, "sqlstate", None) in _PG_RETRYABLE:
        return True
    return isinstance(exc, OperationalError) and any(m in str(orig).lower() for m in _SQLITE_BUSY)


def init_app(app: Flask) -> None:
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = engine_options(
        app.config["SQLALCHEMY_DATABASE_URI"], app.config.get("SQLALCHEMY_ENGINE_OPTIONS") or {},
        float(app.config.get("SQLITE_BUSY_TIMEOUT", 15)))

    @app.errorhandler(DBAPIError)
    def busy(exc: DBAPIError):
        if not retryable(exc):
            raise exc  # a real fault: the usual 500 (logged with its traceback, never shown)
        db.session.rollback()
        log.warning("%s %s: database busy, answered 503: %s", request.method, request.path, exc.orig)
        headers = {"Retry-After": str(RETRY_AFTER_S)}
        if request.path.startswith("/api/"):
            return jsonify(message=MESSAGE), 503, headers
        return render_template("error.html", code=503, message=MESSAGE), 503, headers
