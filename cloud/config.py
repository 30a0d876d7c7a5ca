"""Configuration read from the environment (12-factor). Every key can be overridden by create_app(overrides)."""
from __future__ import annotations

import os
import secrets


def is_on(value) -> bool:
    """Whether a setting's value (from the environment or the app's config) means yes: 1, true, yes or on."""
    return str(value).strip().lower() in {"1", "true", "yes", "on"}


def _bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return is_on(raw)


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw not in (None, "") else default


def _database_url() -> str:
    url = os.environ.get("DATABASE_URL")
    if not url:
        os.makedirs(os.path.join(os.getcwd(), "var"), exist_ok=True)
        return "sqlite:///" + os.path.join(os.getcwd(), "var", "keydrop.sqlite3")
    # Heroku-style URLs name the driver "postgres://"; we ship psycopg 3.
    if url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url[len("postgres://"):]
    elif url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


def from_environment() -> dict:
    secret_key = os.environ.get("SECRET_KEY")
    return {
        # A random key when none is configured: sessions then do not survive a restart (fine for development).
        "SECRET_KEY": secret_key or secrets.token_hex(32),
        "SECRET_KEY_IS_RANDOM": secret_key is None,
        "SQLALCHEMY_DATABASE_URI": _database_url(),
        "SQLALCHEMY_ENGINE_OPTIONS": {"pool_pre_ping": True},
        # SQLite only: seconds a statement waits for another process's write (cloud/dbbusy.py), then 503
        "SQLITE_BUSY_TIMEOUT": float(os.environ.get("SQLITE_BUSY_TIMEOUT", "15")),
        # Session cookie: HttpOnly always, SameSite=Lax, Secure unless SESSION_COOKIE_SECURE=0 (the dev stack
        # serves plain http on 127.0.0.1; browsers would not send a Secure cookie back to other http hosts).
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_SECURE": _bool("SESSION_COOKIE_SECURE", True),
        "PERMANENT_SESSION_LIFETIME": _int("SESSION_LIFETIME_S", 12 * 3600),
        "WTF_CSRF_TIME_LIMIT": None,  # tokens live as long as the session
        # Request bodies above this are refused with 413 (forms and API bodies are a few KB at most).
        "MAX_CONTENT_LENGTH": _int("MAX_CONTENT_LENGTH", 1024 * 1024),
        # Flask-Mail
        "MAIL_SERVER": os.environ.get("MAIL_SERVER", "127.0.0.1"),
        "MAIL_PORT": _int("MAIL_PORT", 8025),
        "MAIL_USE_TLS": _bool("MAIL_USE_TLS", False),
        "MAIL_USE_SSL": _bool("MAIL_USE_SSL", False),
        "MAIL_USERNAME": os.environ.get("MAIL_USERNAME"),
        "MAIL_PASSWORD": os.environ.get("MAIL_PASSWORD"),
        "MAIL_DEFAULT_SENDER": os.environ.get("MAIL_DEFAULT_SENDER", "KeyDrop <no-reply@keydrop.localhost>"),
        "MAIL_TIMEOUT": _int("MAIL_TIMEOUT", 10),
        # Outbox worker
        "MAILER_POLL_INTERVAL": float(os.environ.get("MAILER_POLL_INTERVAL", "2")),
        "MAILER_MAX_ATTEMPTS": _int("MAILER_MAX_ATTEMPTS", 12),
        "MAILER_BACKOFF_BASE_S": float(os.environ.get("MAILER_BACKOFF_BASE_S", "10")),
        "MAILER_BACKOFF_MAX_S": float(os.environ.get("MAILER_BACKOFF_MAX_S", "3600")),
        "MAILER_STALE_SENDING_S": _int("MAILER_STALE_SENDING_S", 600),
        # Rate limits (Flask-Limiter). memory:// counts per process: with several web workers (gunicorn -w N)
        # each would allow the full limit, so production points them all at one Redis (REDIS_URL).
        "RATELIMIT_ENABLED": _bool("RATELIMIT_ENABLED", True),
        "RATELIMIT_STORAGE_URI": (os.environ.get("RATELIMIT_STORAGE_URI") or os.environ.get("REDIS_URL")
                                  or "memory://"),
        "LOGIN_RATE_LIMIT": os.environ.get("LOGIN_RATE_LIMIT", "10 per minute;50 per hour"),
        "SIGNUP_RATE_LIMIT": os.environ.get("SIGNUP_RATE_LIMIT", "5 per minute;30 per hour"),
        # What the installer tool writes into the lock's config (see POST /api/v1/locks/<id>/provision).
        "MQTT_PUBLIC_HOST": os.environ.get("MQTT_PUBLIC_HOST", "127.0.0.1"),
        "MQTT_PUBLIC_PORT": _int("MQTT_PUBLIC_PORT", 1883),
        "MQTT_PUBLIC_TLS": _bool("MQTT_PUBLIC_TLS", False),
        # The firmware release key file (`flask --app cloud firmware keygen`): signs releases, and its public
        # half goes to every lock in its provisioning. Never stored in the database.
        "FIRMWARE_SIGNING_KEY": os.environ.get("FIRMWARE_SIGNING_KEY") or None,
        # Absolute links in emails (password reset, invitations).
        "PUBLIC_BASE_URL": os.environ.get("PUBLIC_BASE_URL", "http://127.0.0.1:5000"),
        "PASSWORD_RESET_MAX_AGE_S": _int("PASSWORD_RESET_MAX_AGE_S", 3600),
        "INVITE_MAX_AGE_S": _int("INVITE_MAX_AGE_S", 7 * 24 * 3600),
        # Reservation feeds (cloud/feeds/) and the outbound-request guard shared with webhooks (cloud/netguard.py).
        "CALENDAR_POLL_S": float(os.environ.get("CALENDAR_POLL_S", "900")),
        "CALENDAR_TIMEOUT_S": float(os.environ.get("CALENDAR_TIMEOUT_S", "10")),
        "CALENDAR_MAX_BYTES": _int("CALENDAR_MAX_BYTES", 1024 * 1024),
        "CALENDAR_ALLOW_PRIVATE_HOSTS": _bool("CALENDAR_ALLOW_PRIVATE_HOSTS", False),
        # Alerts and readiness checks (cloud/alerts.py, the `flask --app cloud automation` worker).
        "ALERT_OFFLINE_AFTER_S": _int("ALERT_OFFLINE_AFTER_S", 1800),
        "ALERT_CLOCK_SKEW_S": _int("ALERT_CLOCK_SKEW_S", 120),
        "READINESS_HOURS": os.environ.get("READINESS_HOURS", "24,2"),
        "AUTOMATION_TICK_S": float(os.environ.get("AUTOMATION_TICK_S", "30")),
        # Webhook deliveries (cloud/webhooks.py), delivered by the outbox worker with the mail.
        "WEBHOOK_TIMEOUT_S": float(os.environ.get("WEBHOOK_TIMEOUT_S", "10")),
        "WEBHOOK_MAX_ATTEMPTS": _int("WEBHOOK_MAX_ATTEMPTS", 10),
        "WEBHOOK_BACKOFF_BASE_S": float(os.environ.get("WEBHOOK_BACKOFF_BASE_S", "30")),
        "WEBHOOK_BACKOFF_MAX_S": float(os.environ.get("WEBHOOK_BACKOFF_MAX_S", "3600")),
        # A delivery pass stops after this (plus at most one WEBHOOK_TIMEOUT_S): the mail waits for no receiver.
        "WEBHOOK_PASS_BUDGET_S": float(os.environ.get("WEBHOOK_PASS_BUDGET_S", "20")),
    }
