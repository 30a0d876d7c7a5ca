"""Fixtures of the cloud tests on top of tests/conftest.py."""
import pytest


@pytest.fixture
def strict_app(app_config):
    """The app as in production: CSRF on, rate limits on (small ones)."""
    from cloud import create_app
    from cloud.extensions import db
    cfg = dict(app_config, WTF_CSRF_ENABLED=True, RATELIMIT_ENABLED=True, LOGIN_RATE_LIMIT="3 per minute",
               SIGNUP_RATE_LIMIT="2 per minute")
    app = create_app(cfg)
    with app.app_context():
        db.create_all()
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()
