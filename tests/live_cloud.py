"""The real cloud app (cloud.create_app) served over HTTP from a thread, on a temporary SQLite database
migrated with Alembic, with two agencies and their API tokens: what the installer and tool tests talk to."""
from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path

from tools.cloudclient import ApiClient, api_url

PASSWORD = "installer-test-pw-1"


@contextmanager
def served(app):
    """app over HTTP on loopback, on a port the system picks (port 0), from a thread; yields the server with
    its .url; shut down after the block."""
    from werkzeug.serving import make_server
    server = make_server("127.0.0.1", 0, app, threaded=True)
    server.url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        thread.join(5)


class LiveCloud:
    """The real Flask app (cloud.create_app) on a werkzeug server thread, with two agencies and tokens."""

    def __init__(self, tmp: Path, **config):
        from cloud import create_app
        self.db_path = tmp / "cloud.sqlite3"
        self.app = create_app({
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{self.db_path}",
            "RATELIMIT_ENABLED": False,
            "TESTING": True,
            "MQTT_PUBLIC_HOST": "mqtt.test.invalid",
            "MQTT_PUBLIC_PORT": 8883,
            "MQTT_PUBLIC_TLS": True,
            **config,
        })
        with self.app.app_context():
            from flask_migrate import upgrade
            upgrade()
        self._serving = served(self.app)
        self.url = self._serving.__enter__().url
        self.token = self.new_agency("Seaside Rentals", "owner@seaside.test")
        self.other_token = self.new_agency("Other Homes", "owner@other.test")

    def new_agency(self, name: str, email: str) -> str:
        from cloud.domain import create_agency
        with self.app.app_context():
            create_agency(name=name, email=email, password=PASSWORD)
        return ApiClient(api_url(self.url), basic=(email, PASSWORD), timeout=10).new_token()

    def api(self, method: str, path: str, body: dict | None = None, token: str | None = None):
        """(status, body) of PATH under /api/v1, with the first agency's token unless another is given."""
        return ApiClient(api_url(self.url), token=token or self.token, timeout=10).call(method, path, body)

    def mark_active(self, lock_id: str) -> None:
        """What the bridge does on the lock's first verified hello (cloud/domain.py lock_hello)."""
        from cloud.domain import lock_hello
        from cloud.extensions import db
        from cloud.models import Lock
        with self.app.app_context():
            lock = db.session.get(Lock, lock_id)
            lock_hello(lock, firmware="test", boot_count=1, lock_time=None, revision=0)

    def close(self):
        self._serving.__exit__(None, None, None)
