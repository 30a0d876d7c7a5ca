"""Typed SQLAlchemy 2 models. Behaviour that belongs to one row lives on its model;
operations spanning rows and transactions live in cloud/domain.py."""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import datetime, time
from typing import Optional

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship
from werkzeug.security import check_password_hash, generate_password_hash

from .extensions import db
from .timeutil import UTCDateTime, utcnow

# ---------------------------------------------------------------- agencies and people


class Agency(db.Model):
    __tablename__ = "agency"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(120))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    # Alert kinds (cloud/alerts.py ALERT_KINDS) the agency turned off on its settings page; None: all on.
    alerts_off: Mapped[Optional[list]] = mapped_column(sa.JSON)

    users: Mapped[list["User"]] = relationship(back_populates="agency", order_by="User.id")

    @property
    def owner(self) -> "User":
        return next(u for u in self.users if u.role == "owner")


class User(db.Model):
    __tablename__ = "user_account"

    id: Mapped[int] = mapped_column(primary_key=True)
    agency_id: Mapped[int] = mapped_column(sa.ForeignKey("agency.id"), index=True)
    email: Mapped[str] = mapped_column(sa.String(254), unique=True)
    name: Mapped[str] = mapped_column(sa.String(120), default="")
    # None until an invited staff member chooses a password.
    password_hash: Mapped[Optional[str]] = mapped_column(sa.String(255))
    role: Mapped[str] = mapped_column(sa.String(10), default="staff")  # owner | manager | staff (auth/roles.py)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Every session carries the value it was opened with; bumping it (logout, password change, removal) ends
    # all of the person's sessions at once, on every device.
    session_version: Mapped[int] = mapped_column(default=0, server_default="0")
    # Set when the agency removed the person: they can no longer log in; the history keeps their name.
    removed_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)

    agency: Mapped[Agency] = relationship(back_populates="users")

    @staticmethod
    def normalize_email(email: str) -> str:
        return email.strip().lower()

    def set_password(self, password: str) -> None:
        """Also ends every session the person has open (see auth.load_user)."""
        self.password_hash = generate_password_hash(password, method="scrypt")
        self.session_version = (self.session_version or 0) + 1

    def check_password(self, password: str) -> bool:
        return self.password_hash is not None and check_password_hash(self.password_hash, password)

    @property
    def is_owner(self) -> bool:
        return self.role == "owner"

    @property
    def is_invited(self) -> bool:
        """Invited and not yet joined (no password chosen)."""
        return self.password_hash is None and self.removed_at is None

    @property
    def password_fingerprint(self) -> str:
        """Changes whenever the password does, so reset links die once used."""
        return hashlib.sha256((self.password_hash or "unset").encode()).hexdigest()[:16]


class ApiToken(db.Model):
    """Bearer tokens for /api/v1. Only a SHA-256 of the token is stored."""

    __tablename__ = "api_token"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("user_account.id"), index=True)
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    label: Mapped[str] = mapped_column(sa.String(80), default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship()

    @staticmethod
    def hash(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    @classmethod
    def issue(cls, user: User, label: str = "") -> tuple["ApiToken", str]:
        token = "kd_" + secrets.token_urlsafe(32)
        return cls(user=user, token_hash=cls.hash(token), label=label, created_at=utcnow()), token


# ---------------------------------------------------------------- locks

MAC_RE = re.compile(r"^[0-9a-f]{12}$")


class InvalidMac(ValueError):
    pass


def canonical_mac(raw: str) -> str:
    """`AA:BB:CC:DD:EE:FF`, `aa-bb-cc-dd-ee-ff` or `aabbccddeeff` → `aabbccddeeff`; refuses anything else."""
    s = (raw or "").strip().lower()
    if re.fullmatch(r"[0-9a-f]{2}([:-])[0-9a-f]{2}(\1[0-9a-f]{2}){4}", s):
        s = s.replace(":", "").replace("-", "")
    if not MAC_RE.fullmatch(s):
        raise InvalidMac("A MAC address is 6 bytes in hex, like AA:BB:CC:DD:EE:FF.")
    if s == "ffffffffffff":
        raise InvalidMac("That is the broadcast address, not a device's MAC.")
    if s == "000000000000":
        raise InvalidMac("An all-zero MAC address is not a device's MAC.")
    return s


def format_mac(mac: str) -> str:
    return ":".join(mac[i:i + 2] for i in range(0, 12, 2)).upper()


DEFAULT_CHECKIN = time(15, 0)
DEFAULT_CHECKOUT = time(11, 0)


def mqtt_password(secret: bytes) -> str:
    """A lock's broker password: hex HMAC-SHA256(secret, b"mqtt-password"), first 32 hex digits (the installer
    writes it into the lock's config; cloud/broker_credentials.py gives it to the broker)."""
    return hmac.new(secret, b"mqtt-password", hashlib.sha256).hexdigest()[:32]


class Lock(db.Model):
    __tablename__ = "lock"

    id: Mapped[str] = mapped_column(sa.String(12), primary_key=True)  # canonical MAC
    agency_id: Mapped[int] = mapped_column(sa.ForeignKey("agency.id"), index=True)
    name: Mapped[str] = mapped_column(sa.String(120))
    address: Mapped[str] = mapped_column(sa.String(500))
    timezone: Mapped[str] = mapped_column(sa.String(64))
    # Wall-clock times at the property (its time zone) a stay starts and ends on a reservation's dates.
    checkin_time: Mapped[time] = mapped_column(sa.Time, default=DEFAULT_CHECKIN)
    checkout_time: Mapped[time] = mapped_column(sa.Time, default=DEFAULT_CHECKOUT)
    secret: Mapped[bytes] = mapped_column(sa.LargeBinary(32))
    backup_key: Mapped[str] = mapped_column(sa.String(4))
    status: Mapped[str] = mapped_column(sa.String(12), default="registered")  # registered | active | retired
    registered_by_id: Mapped[Optional[int]] = mapped_column(sa.ForeignKey("user_account.id"))
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    activated_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    firmware_version: Mapped[Optional[str]] = mapped_column(sa.String(40))
    boot_count: Mapped[Optional[int]] = mapped_column()
    clock_skew_s: Mapped[Optional[int]] = mapped_column()  # lock clock minus cloud clock at the last hello
    # the health figures of the last hello (domain.clean_health: reset, uptime, heap_free, heap_block, rssi,
    # flash_writes), and when it came
    health: Mapped[Optional[dict]] = mapped_column(sa.JSON)
    health_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    # Revision of the code set the cloud wants on the lock; bumped in the transaction of every change.
    desired_revision: Mapped[int] = mapped_column(default=1)
    # Highest revision the lock confirmed it installed.
    acked_revision: Mapped[int] = mapped_column(default=0)
    # Revision the lock said it holds in its last hello (may be lower than acked after a wipe).
    reported_revision: Mapped[Optional[int]] = mapped_column()
    # Set when the agency took the lock out of service (domain.decommission_lock); the row then lives on under
    # an archive id so that its MAC is free again and its history stays readable.
    decommissioned_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    decommissioned_mac: Mapped[Optional[str]] = mapped_column(sa.String(12))

    agency: Mapped[Agency] = relationship()
    # The bridge's view of the MQTT session (cloud/bridge/); no row until the bridge first handles the lock.
    connection: Mapped[Optional["BridgeLockState"]] = relationship(
        primaryjoin="foreign(BridgeLockState.lock_id) == Lock.id", viewonly=True, uselist=False)

    @classmethod
    def new(cls, *, mac: str, agency: Agency, name: str, address: str, timezone: str,
            by: User | None = None) -> "Lock":
        from . import codegen
        return cls(id=mac, agency=agency, name=name, address=address, timezone=timezone,
                   secret=secrets.token_bytes(32), backup_key=codegen.pick(set()),
                   checkin_time=DEFAULT_CHECKIN, checkout_time=DEFAULT_CHECKOUT,
                   registered_by_id=by.id if by else None, status="registered",
                   desired_revision=1, acked_revision=0, registered_at=utcnow())

    @property
    def is_active(self) -> bool:
        return self.status == "active"

    @property
    def online(self) -> bool | None:
        """True/False as the bridge last saw it (verified hello / signed last will); None if it never did."""
        state = self.connection
        return state.online if state is not None and state.online_changed_at is not None else None

    @property
    def online_changed_at(self) -> datetime | None:
        """When the bridge last saw the lock come online or go offline; None if it never did."""
        return self.connection.online_changed_at if self.online is not None else None

    @property
    def is_decommissioned(self) -> bool:
        return self.status == "retired"

    @property
    def mac_display(self) -> str:
        return format_mac(self.decommissioned_mac or self.id)

    def digest(self, code: str) -> bytes:
        """HMAC-SHA256(secret, code as ASCII): what the lock stores and compares instead of the code."""
        return hmac.new(self.secret, code.encode("ascii"), hashlib.sha256).digest()

    @property
    def mqtt_password(self) -> str:
        return mqtt_password(self.secret)

    def bump_revision(self) -> int:
        """Bump desired_revision in SQL (row-locking UPDATE), so concurrent writers serialise on the lock, and
        queue the change for the bridge in the same transaction (cloud/statequeue.py)."""
        from .statequeue import enqueue
        db.session.execute(sa.update(Lock).where(Lock.id == self.id)
                           .values(desired_revision=Lock.desired_revision + 1))
        enqueue([self.id])
        db.session.refresh(self, ["desired_revision"])
        return self.desired_revision


class BridgeLockState(db.Model):
    """Bridge-owned per-lock MQTT state (cloud/bridge/ writes it; the web only reads `online`).
    No foreign key: the bridge may hold a row for a lock id before or after the lock row (migration 0002)."""

    __tablename__ = "bridge_lock_state"

    lock_id: Mapped[str] = mapped_column(sa.String(12), primary_key=True)
    last_counter: Mapped[int] = mapped_column(sa.BigInteger, default=0)   # highest accepted uplink `n`
    will_counter: Mapped[Optional[int]] = mapped_column(sa.BigInteger)    # `will` of the last hello
    # Bit k set: counter last_counter - 1 - k was accepted too. Several bridge workers share the uplinks and may
    # apply a lock's messages slightly out of order; each counter value is still accepted at most once.
    seen_window: Mapped[int] = mapped_column(sa.BigInteger, default=0, server_default="0")
    # Set on a verified hello (True) and on the lock's signed last will (False), with online_changed_at.
    # A row the bridge created for other reasons (start-up, a publish) has online_changed_at None: never seen.
    online: Mapped[bool] = mapped_column(default=False)
    online_changed_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)


class StateChange(db.Model):
    """Outbox of desired-state changes (cloud/statequeue.py): at most one pending row per lock, written in the
    transaction that changed the lock's desired state, deleted by the bridge worker that published it."""

    __tablename__ = "state_change"

    id: Mapped[int] = mapped_column(sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True)
    lock_id: Mapped[str] = mapped_column(sa.String(12), unique=True)
    queued_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # SQLite only (PostgreSQL claims with row locks): the bridge worker publishing the row's lock, until when. A
    # change queued meanwhile clears both (the row is queued again, for any worker); the worker deletes only the
    # rows still claimed by it (cloud/bridge/publisher.py)
    claimed_by: Mapped[Optional[str]] = mapped_column(sa.String(32))
    claimed_until: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)


# ---------------------------------------------------------------- codes


class Code(db.Model):
    __tablename__ = "code"
    __table_args__ = (sa.Index("ix_code_lock_window", "lock_id", "valid_until", "valid_from"),
                      sa.Index("ix_code_lock_reservation", "lock_id", "reservation_uid"),
                      # expire_due's query: only codes still waiting to be noted, by end time (a partial index,
                      # so its size is the live codes, not every code ever made)
                      sa.Index("ix_code_expiry_due", "valid_until",
                               postgresql_where=sa.text("revoked_at IS NULL AND expired_noted_at IS NULL"),
                               sqlite_where=sa.text("revoked_at IS NULL AND expired_noted_at IS NULL")))

    id: Mapped[int] = mapped_column(primary_key=True)
    lock_id: Mapped[str] = mapped_column(sa.ForeignKey("lock.id"), index=True)
    agency_id: Mapped[int] = mapped_column(sa.ForeignKey("agency.id"), index=True)
    code: Mapped[str] = mapped_column(sa.String(4))
    valid_from: Mapped[datetime] = mapped_column(UTCDateTime)
    valid_until: Mapped[datetime] = mapped_column(UTCDateTime)
    customer_name: Mapped[Optional[str]] = mapped_column(sa.String(120))
    customer_email: Mapped[Optional[str]] = mapped_column(sa.String(254))
    created_by_id: Mapped[Optional[int]] = mapped_column(sa.ForeignKey("user_account.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    revoked_by_id: Mapped[Optional[int]] = mapped_column(sa.ForeignKey("user_account.id"))
    # Lock revision without this code (set with revoked_at); removed_at is set when the lock acknowledges it.
    revoked_revision: Mapped[Optional[int]] = mapped_column()
    removed_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    # Language of the guest's email and page ("en" | "fr", cloud/i18n.py).
    locale: Mapped[str] = mapped_column(sa.String(5), default="en", server_default="en")
    # Lock revision that first carries this code; on_lock_at is set when the lock acknowledges it.
    revision: Mapped[int] = mapped_column()
    on_lock_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    # Set by expire_due() when the code's end passed and the lock's revision was bumped for it.
    expired_noted_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    # "manual" (a person made it) or "calendar" (born from the lock's reservation feed, cloud/feeds/).
    source: Mapped[str] = mapped_column(sa.String(10), default="manual", server_default="manual")
    reservation_uid: Mapped[Optional[str]] = mapped_column(sa.String(255))
    # Consecutive good feed syncs in which this code's reservation was missing, and since when (the first of
    # them): revoked at 2 once the absence lasted CALENDAR_POLL_S (cloud/feeds/sync.py).
    feed_absent: Mapped[int] = mapped_column(default=0, server_default="0")
    feed_absent_since: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)

    lock: Mapped[Lock] = relationship()
    created_by: Mapped[Optional[User]] = relationship(foreign_keys=[created_by_id])
    revoked_by: Mapped[Optional[User]] = relationship(foreign_keys=[revoked_by_id])

    STATUSES = ("scheduled", "active", "expired", "revoked")

    def status(self, now: datetime | None = None) -> str:
        now = now or utcnow()
        if self.revoked_at is not None:
            return "revoked"
        if now >= self.valid_until:
            return "expired"
        if now < self.valid_from:
            return "scheduled"
        return "active"

    @property
    def on_lock(self) -> str:
        """What the history shows: "on the lock" once acknowledged by the lock, else "pending"."""
        return "on the lock" if self.on_lock_at is not None else "pending"

    @staticmethod
    def status_filter(status: str, now: datetime):
        """SQL condition matching Code.status(now) == status."""
        live = Code.revoked_at.is_(None)
        return {
            "revoked": Code.revoked_at.is_not(None),
            "expired": sa.and_(live, Code.valid_until <= now),
            "scheduled": sa.and_(live, Code.valid_from > now),
            "active": sa.and_(live, Code.valid_from <= now, Code.valid_until > now),
        }[status]


class CalendarFeed(db.Model):
    """A lock's reservation feed (iCal URL) and what its last fetches gave (cloud/feeds/)."""

    __tablename__ = "calendar_feed"

    id: Mapped[int] = mapped_column(primary_key=True)
    lock_id: Mapped[str] = mapped_column(sa.ForeignKey("lock.id"), unique=True)
    agency_id: Mapped[int] = mapped_column(sa.ForeignKey("agency.id"), index=True)
    url: Mapped[str] = mapped_column(sa.String(2000))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Conditional GET validators of the last good answer.
    etag: Mapped[Optional[str]] = mapped_column(sa.String(255))
    last_modified: Mapped[Optional[str]] = mapped_column(sa.String(100))
    last_attempt_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    last_sync_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)  # last good sync
    last_error: Mapped[Optional[str]] = mapped_column(sa.String(500))
    # Set by the first of the good syncs in a row in which every live reservation was missing (an emptied
    # export), cleared by one that found some: such a sync is believed only if the one before it was emptied too.
    emptied_since: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    events_seen: Mapped[int] = mapped_column(default=0)        # events in the last good answer
    reservations_seen: Mapped[int] = mapped_column(default=0)  # of which stays (the rest were skipped)
    # A worker holds the feed until then (several workers, or --once beside the daemon, never sync it twice).
    claimed_until: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)

    lock: Mapped[Lock] = relationship()


# ---------------------------------------------------------------- what the lock tells us


class LockEvent(db.Model):
    """The lock's access log as it reported it: openings, refusals, lockouts."""

    __tablename__ = "lock_event"
    __table_args__ = (sa.UniqueConstraint("lock_id", "seq", name="uq_lock_event_lock_seq"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    lock_id: Mapped[str] = mapped_column(sa.ForeignKey("lock.id"))
    seq: Mapped[int] = mapped_column(sa.BigInteger)
    t: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)  # lock's time; None when it had no trusted clock
    kind: Mapped[str] = mapped_column(sa.String(32))
    code_id: Mapped[Optional[int]] = mapped_column()  # not a FK: the lock may report ids we revoked long ago
    detail: Mapped[Optional[dict]] = mapped_column(sa.JSON)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class BackupKeyRotation(db.Model):
    __tablename__ = "backup_key_rotation"

    id: Mapped[int] = mapped_column(primary_key=True)
    lock_id: Mapped[str] = mapped_column(sa.ForeignKey("lock.id"), index=True)
    old_key: Mapped[str] = mapped_column(sa.String(4))
    new_key: Mapped[str] = mapped_column(sa.String(4))
    first_used_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revision: Mapped[int] = mapped_column()
    installed_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)


class AuditEvent(db.Model):
    """Who did something sensitive: provisioning (secret handed out), backup-key reveals, revocations."""

    __tablename__ = "audit_event"

    id: Mapped[int] = mapped_column(primary_key=True)
    agency_id: Mapped[int] = mapped_column(sa.ForeignKey("agency.id"), index=True)
    user_id: Mapped[Optional[int]] = mapped_column(sa.ForeignKey("user_account.id"))
    lock_id: Mapped[Optional[str]] = mapped_column(sa.String(12), index=True)
    action: Mapped[str] = mapped_column(sa.String(40))
    remote_addr: Mapped[Optional[str]] = mapped_column(sa.String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    user: Mapped[Optional[User]] = relationship()


# ---------------------------------------------------------------- outbox


class OutboxMail(db.Model):
    """One email to one recipient, written in the transaction that decided to send it."""

    __tablename__ = "outbox_mail"
    __table_args__ = (sa.Index("ix_outbox_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    recipient: Mapped[str] = mapped_column(sa.String(254))
    subject: Mapped[str] = mapped_column(sa.String(200))
    text_body: Mapped[str] = mapped_column(sa.Text)
    html_body: Mapped[Optional[str]] = mapped_column(sa.Text)
    kind: Mapped[str] = mapped_column(sa.String(32), default="")
    # From: "<sender_name> <MAIL_DEFAULT_SENDER's address>" and Reply-To, when the mail speaks for an agency.
    sender_name: Mapped[Optional[str]] = mapped_column(sa.String(120))
    reply_to: Mapped[Optional[str]] = mapped_column(sa.String(254))
    status: Mapped[str] = mapped_column(sa.String(10), default="pending")  # pending|sending|sent|failed
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    claimed_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    last_error: Mapped[Optional[str]] = mapped_column(sa.String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)


# ---------------------------------------------------------------- firmware updates (docs/ota.md)


class FirmwareRelease(db.Model):
    """A signed application bundle (`flask --app cloud firmware build`). The signature comes from the release
    key in the file FIRMWARE_SIGNING_KEY names; the database holds only the public half's work."""

    __tablename__ = "firmware_release"
    __table_args__ = (sa.UniqueConstraint("version", "target"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[str] = mapped_column(sa.String(32))
    target: Mapped[str] = mapped_column(sa.String(12))  # esp32 | host (the simulator)
    size: Mapped[int] = mapped_column()
    sha256: Mapped[str] = mapped_column(sa.String(64))   # hex, of the archive
    signature: Mapped[str] = mapped_column(sa.String(128))  # hex Ed25519 over the manifest
    flags: Mapped[int] = mapped_column(default=0)         # 1: may replace a higher version (downgrade)
    data: Mapped[bytes] = mapped_column(sa.LargeBinary, deferred=True)  # loaded only to answer chunks
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class FirmwareRollout(db.Model):
    """One decision to move locks to a release: to named locks, an agency, or a share of the fleet. Halted by
    itself when more than `max_rollback_share` of the locks it reached rolled back."""

    __tablename__ = "firmware_rollout"

    id: Mapped[int] = mapped_column(primary_key=True)
    release_id: Mapped[int] = mapped_column(sa.ForeignKey("firmware_release.id"), index=True)
    scope: Mapped[str] = mapped_column(sa.String(80))      # "locks", "agency 3", "percent 10"
    max_rollback_share: Mapped[float] = mapped_column(sa.Float, default=0.2)
    state: Mapped[str] = mapped_column(sa.String(12), default="active")  # active | halted
    halted_reason: Mapped[Optional[str]] = mapped_column(sa.String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    release: Mapped[FirmwareRelease] = relationship()


class LockFirmware(db.Model):
    """Per lock: the release it should run and how far it got (written by the bridge from the lock's
    hello, chunk requests and fwstatus reports)."""

    __tablename__ = "lock_firmware"

    lock_id: Mapped[str] = mapped_column(sa.ForeignKey("lock.id", ondelete="CASCADE"), primary_key=True)
    rollout_id: Mapped[Optional[int]] = mapped_column(sa.ForeignKey("firmware_rollout.id"), index=True)
    release_id: Mapped[Optional[int]] = mapped_column(sa.ForeignKey("firmware_release.id"))
    # idle | announced | downloading | staged | updated | refused | rolled_back | halted
    state: Mapped[str] = mapped_column(sa.String(16), default="idle")
    progress: Mapped[int] = mapped_column(default=0)      # bytes of the bundle the lock has asked up to
    last_error: Mapped[Optional[str]] = mapped_column(sa.String(120))
    rollbacks: Mapped[int] = mapped_column(default=0)
    updated_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)

    release: Mapped[Optional[FirmwareRelease]] = relationship()
    rollout: Mapped[Optional[FirmwareRollout]] = relationship()
# ---------------------------------------------------------------- automation: webhooks, alerts


class WebhookEndpoint(db.Model):
    """An integrator's URL that receives the agency's events, signed with its own secret."""

    __tablename__ = "webhook_endpoint"

    id: Mapped[int] = mapped_column(primary_key=True)
    agency_id: Mapped[int] = mapped_column(sa.ForeignKey("agency.id"), index=True)
    url: Mapped[str] = mapped_column(sa.String(2000))
    secret: Mapped[str] = mapped_column(sa.String(64))   # hex; the HMAC-SHA256 key of every delivery
    events: Mapped[list] = mapped_column(sa.JSON)        # event types, or ["*"]
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by_id: Mapped[Optional[int]] = mapped_column(sa.ForeignKey("user_account.id"))

    def wants(self, event_type: str) -> bool:
        return "*" in self.events or event_type in self.events or (
            event_type.startswith("alert.") and "alert.*" in self.events)


class WebhookDelivery(db.Model):
    """One event to one endpoint, written in the transaction of the change (outbox, like OutboxMail)."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (sa.Index("ix_webhook_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    endpoint_id: Mapped[int] = mapped_column(sa.ForeignKey("webhook_endpoint.id", ondelete="CASCADE"), index=True)
    event_id: Mapped[str] = mapped_column(sa.String(36))  # the same for every endpoint and every retry
    event_type: Mapped[str] = mapped_column(sa.String(40))
    body: Mapped[str] = mapped_column(sa.Text)            # the exact JSON bytes signed and sent
    status: Mapped[str] = mapped_column(sa.String(10), default="pending")  # pending|sending|sent|failed
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    claimed_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    last_status: Mapped[Optional[int]] = mapped_column()
    last_error: Mapped[Optional[str]] = mapped_column(sa.String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)


class Alert(db.Model):
    """One alert episode on a lock: opened (owner emailed once), then closed when the condition clears.
    `key` tells episodes of one kind apart where several may exist (a stay's readiness check)."""

    __tablename__ = "alert"
    __table_args__ = (sa.Index("ix_alert_open", "lock_id", "kind", "closed_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    agency_id: Mapped[int] = mapped_column(sa.ForeignKey("agency.id"), index=True)
    lock_id: Mapped[str] = mapped_column(sa.ForeignKey("lock.id"))
    kind: Mapped[str] = mapped_column(sa.String(20))
    key: Mapped[str] = mapped_column(sa.String(64), default="")
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_at: Mapped[datetime] = mapped_column(UTCDateTime)  # the latest occurrence within the episode
    closed_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    detail: Mapped[Optional[dict]] = mapped_column(sa.JSON)


class LockWatch(db.Model):
    """The automation worker's last view of a lock's connection, to notice online/offline changes."""

    __tablename__ = "lock_watch"

    lock_id: Mapped[str] = mapped_column(sa.String(12), primary_key=True)
    online: Mapped[Optional[bool]] = mapped_column()
    changed_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
