"""Shared fixtures for the cloud tests (and anyone who needs an app, an agency, a lock or an SMTP server).

- `app`          the Flask app on a fresh database; parametrized: SQLite always, PostgreSQL when
                 TEST_POSTGRES_URL is set (the PG variant is skipped only when the variable is absent).
- `client`       app.test_client()
- `smtp_server`  a real SMTP server (aiosmtpd) on a free loopback port; `.messages`, `.to(addr)`,
                 `.stop()` / `.start()` on the same port to simulate an outage.
- `make_agency`  factory: make_agency(name=…, email=…, password=…) → Agency info (id, email, password, …)
- `api_token`    factory: api_token(agency=None) → bearer token (through POST /api/v1/tokens)
- `make_lock`    factory: make_lock(agency, active=True, mac=None, …) → lock id (canonical MAC)
- `login`        factory: login(client, agency) logs a test client in through the form
- `deliver_mail` runs the outbox worker once (mailer.run_pending) and returns its counts
- `live_server`  the app served over HTTP on a free port in a thread (for the browser)
- `browser`      one headless Chromium (Playwright) for the session
"""
from __future__ import annotations

import email
import email.policy
import itertools
import os
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- SMTP


class SmtpSink:
    """aiosmtpd on 127.0.0.1:<port>, collecting every message it accepts."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.messages: list[email.message.EmailMessage] = []
        self._lock = threading.Lock()
        self._controller = None

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd handler hook
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        msg["X-Envelope-To"] = ", ".join(envelope.rcpt_tos)
        with self._lock:
            self.messages.append(msg)
        return "250 OK"

    def start(self) -> "SmtpSink":
        from aiosmtpd.controller import Controller
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port, ready_timeout=10)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    @property
    def running(self) -> bool:
        return self._controller is not None

    def to(self, address: str) -> list[email.message.EmailMessage]:
        with self._lock:
            return [m for m in self.messages if address.lower() in m["X-Envelope-To"].lower()]

    @staticmethod
    def text(msg) -> str:
        return msg.get_body(preferencelist=("plain",)).get_content()

    @staticmethod
    def html(msg) -> str:
        return msg.get_body(preferencelist=("html",)).get_content()

    def wait_for(self, count: int, timeout: float = 5.0) -> list:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return list(self.messages)


@pytest.fixture
def smtp_server():
    sink = SmtpSink().start()
    yield sink
    sink.stop()


# ---------------------------------------------------------------- databases


@pytest.fixture(scope="session")
def postgres_database():
    """A private database on the TEST_POSTGRES_URL server for this session (other suites may share the
    server); dropped at the end. None when TEST_POSTGRES_URL is absent."""
    url = os.environ.get("TEST_POSTGRES_URL")
    if not url:
        yield None
        return
    import sqlalchemy as sa
    name = f"keydrop_cloud_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield sa.engine.make_url(url).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path, postgres_database):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'keydrop.sqlite3'}"
    if postgres_database is None:
        pytest.skip("TEST_POSTGRES_URL is not set")
    return postgres_database


def _reset_schema(db) -> None:
    """Empty database with the models' tables (PostgreSQL is shared by the session: truncate)."""
    if db.engine.dialect.name == "sqlite":
        db.create_all()
        return
    import sqlalchemy as sa
    db.create_all()
    names = ", ".join(f'"{t.name}"' for t in db.metadata.sorted_tables)
    with db.engine.begin() as conn:
        conn.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))


TEST_CONFIG = {
    "TESTING": True,
    "SECRET_KEY": "test-secret-key",
    "WTF_CSRF_ENABLED": False,
    "MAIL_SUPPRESS_SEND": False,  # Flask-Mail would swallow mail under TESTING; we test the real path
    "RATELIMIT_ENABLED": False,
    "MAIL_DEFAULT_SENDER": "KeyDrop <no-reply@keydrop.example.com>",
    "MAILER_BACKOFF_BASE_S": 5,
    "MAILER_MAX_ATTEMPTS": 5,
    "MAIL_TIMEOUT": 5,
    "PUBLIC_BASE_URL": "http://keydrop.example.com",
}


@pytest.fixture
def app_config(db_url, smtp_server) -> dict:
    """Overrides given to create_app(); tests can tweak it before requesting `app`."""
    return dict(TEST_CONFIG, SQLALCHEMY_DATABASE_URI=db_url, MAIL_SERVER="127.0.0.1", MAIL_PORT=smtp_server.port)


@pytest.fixture
def app(app_config):
    from cloud import create_app
    from cloud.extensions import db
    app = create_app(app_config)
    with app.app_context():
        _reset_schema(db)
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


# ---------------------------------------------------------------- domain factories


@dataclass
class AgencyInfo:
    id: int
    name: str
    email: str
    password: str
    owner_id: int


_seq = itertools.count(1)


@pytest.fixture
def make_agency(app):
    def make(name: str | None = None, email: str | None = None, password: str = "correct horse battery") -> AgencyInfo:
        from cloud.domain import create_agency
        n = next(_seq)
        name = name or f"Agency {n}"
        email = email or f"owner{n}@agency{n}.example.com"
        with app.app_context():
            agency, owner = create_agency(name=name, email=email, password=password)
            return AgencyInfo(agency.id, agency.name, owner.email, password, owner.id)
    return make


@pytest.fixture
def api_token(app, client, make_agency):
    def token(agency: AgencyInfo | None = None) -> str:
        agency = agency or make_agency()
        resp = client.post("/api/v1/tokens", auth=(agency.email, agency.password))
        assert resp.status_code == 201, resp.get_json()
        return resp.get_json()["token"]
    return token


@pytest.fixture
def make_lock(app):
    macs = itertools.count(0x24A160000001)

    def make(agency: AgencyInfo, *, active: bool = True, mac: str | None = None, name: str = "Flat 3B",
             address: str = "12 rue de la Paix, 75002 Paris", timezone: str = "Europe/Paris",
             firmware: str = "1.0.0") -> str:
        from cloud import domain
        from cloud.extensions import db
        from cloud.models import Agency, User
        with app.app_context():
            ag = db.session.get(Agency, agency.id)
            lock = domain.register_lock(ag, mac=mac or f"{next(macs):012x}", name=name, address=address,
                                        timezone=timezone, by=db.session.get(User, agency.owner_id))
            if active:
                domain.lock_hello(lock, firmware=firmware, boot_count=1, lock_time=None, revision=0)
            return lock.id
    return make


@pytest.fixture
def login():
    def do(client, agency: AgencyInfo):
        resp = client.post("/login", data={"email": agency.email, "password": agency.password})
        assert resp.status_code == 302, resp.data[:500]
        return client
    return do


@pytest.fixture
def deliver_mail(app):
    def run(now=None) -> dict:
        from cloud.mailer import run_pending
        with app.app_context():
            return run_pending(now=now)
    return run


# ---------------------------------------------------------------- live HTTP server


@pytest.fixture
def live_server(app):
    from tests.live_cloud import served
    with served(app) as server:
        yield server


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium for the session (tests/chromium.py); skipped where Chromium is not installed."""
    from tests.chromium import ARGS, CHROMIUM
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian chromium is not installed")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


class RecordingClient:
    """Stands in for the bridge's paho client: downlinks are collected in `sent`, not sent."""

    def __init__(self):
        self.sent = []
        self.acked = []

    def publish(self, topic, payload, qos=0, retain=False):
        self.sent.append((topic, payload, retain))
        return _Delivered()

    def ack(self, mid, qos):
        self.acked.append(mid)


class _Delivered:
    """paho's MessageInfo of a publication the broker acknowledged at once."""

    def wait_for_publish(self, timeout=None):
        pass

    def is_published(self):
        return True


def set_connection(lock_id: str, online: bool, at) -> None:
    """What the bridge records of a lock's connection (BridgeLockState), as of `at`, committed."""
    from cloud.extensions import db
    from cloud.models import BridgeLockState
    row = db.session.get(BridgeLockState, lock_id)
    if row is None:
        row = BridgeLockState(lock_id=lock_id, last_counter=0)
        db.session.add(row)
    row.online, row.online_changed_at = online, at
    db.session.commit()


@pytest.fixture
def bridge(app):
    """A real Bridge (cloud/bridge/) without a broker: its MQTT client records the downlinks."""
    from cloud.bridge import Bridge
    with app.app_context():
        b = Bridge(app, host="unused", port=0, username=None, password=None)
        b.client = RecordingClient()
        b.session.connected.set()
        yield b


# ---------------------------------------------------------------- outbound HTTP peers (feeds, webhooks)


@pytest.fixture
def feed_server():
    from tests.httpfixtures import FeedServer
    srv = FeedServer().start()
    yield srv
    srv.stop()


@pytest.fixture
def webhook_receiver():
    from tests.httpfixtures import WebhookReceiver
    srv = WebhookReceiver().start()
    yield srv
    srv.stop()
