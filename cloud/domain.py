"""Domain operations shared by the web pages, the JSON API and the MQTT bridge.

Every function here that changes state commits its own transaction; mails it decides to send are written to
the outbox in that same transaction (cloud/mailer.py delivers them). Functions take model instances that the
caller already scoped to an agency (web/API) or looked up by lock id (bridge).
"""
from __future__ import annotations

import logging
import secrets
from datetime import datetime, time, timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.attributes import set_committed_value

from . import alerts, broker_credentials, codegen, codemail, statequeue
from . import events as webhook_events
from .extensions import db
from .firmware.release import public_key_hex
from .mailer import absolute_url, enqueue, from_agency
from .models import (Agency, AuditEvent, BackupKeyRotation, BridgeLockState, CalendarFeed, Code, Lock,
                     LockEvent, User,
                     canonical_mac)
from .sqlsets import among
from .timeutil import UTC, aware, fmt_local, from_epoch, is_valid_zone, to_epoch, utcnow

log = logging.getLogger("keydrop.domain")

MAX_PERIOD = timedelta(days=366)
# A lock's "clock set from the cloud" entry is stamped with the cloud's time of its reply, just after the hello
# (last_seen_at); this allows for bridge hosts whose clocks differ a little.
CLOCK_SET_SLACK = timedelta(seconds=60)
# The protocol carries a code's validity as unsigned 32-bit epoch seconds (docs/protocol.md): a later end could
# not be sent to the lock (the bridge would fail to publish the lock's state).
LAST_LOCK_TIME = datetime.fromtimestamp(2 ** 32 - 1, UTC)


class DomainError(Exception):
    """A refusal with a message fit for the user. `status` is the HTTP status the API answers with."""

    status = 400

    def __init__(self, message: str, **extra):
        super().__init__(message)
        self.message = message
        self.extra = extra


class Conflict(DomainError):
    status = 409


class LockNotActive(Conflict):
    pass


# ---------------------------------------------------------------- agencies


def create_agency(*, name: str, email: str, password: str) -> tuple[Agency, User]:
    name = (name or "").strip()
    email = User.normalize_email(email or "")
    if not name:
        raise DomainError("The agency needs a name.")
    if len(password or "") < 8:
        raise DomainError("The password needs at least 8 characters.")
    if db.session.scalar(sa.select(User.id).where(User.email == email)) is not None:
        raise Conflict("An account with this email already exists.")
    agency = Agency(name=name, created_at=utcnow())
    owner = User(agency=agency, email=email, role="owner", created_at=utcnow())
    owner.set_password(password)
    db.session.add_all([agency, owner])
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise Conflict("An account with this email already exists.")
    return agency, owner


def audit(agency_id: int, action: str, *, user: User | None = None, lock_id: str | None = None,
          remote_addr: str | None = None) -> AuditEvent:
    ev = AuditEvent(agency_id=agency_id, user_id=user.id if user else None, lock_id=lock_id,
                    action=action, remote_addr=remote_addr, at=utcnow())
    db.session.add(ev)
    return ev


# ---------------------------------------------------------------- locks


def register_lock(agency: Agency, *, mac: str, name: str, address: str, timezone: str,
                  by: User | None = None) -> Lock:
    """Create a lock with its 32-byte secret and first backup key. Refuses malformed/duplicate MACs:
    Conflict(lock_id=…) if this agency already has it, a Conflict without details if another one does."""
    mac = canonical_mac(mac)  # InvalidMac is a ValueError; callers turn it into a form error / 400
    name, address, timezone = _lock_name(name), _lock_address(address), _lock_zone(timezone)
    existing = db.session.get(Lock, mac)
    if existing is not None:
        if existing.agency_id == agency.id:
            raise Conflict("Your agency already registered this MAC address.", lock_id=mac)
        raise Conflict("This MAC address is already registered.")
    lock = Lock.new(mac=mac, agency=agency, name=name, address=address, timezone=timezone, by=by)
    db.session.add(lock)
    statequeue.enqueue([lock.id])  # its first state (no codes, the backup key) waits retained for its first connect
    try:
        db.session.commit()
    except IntegrityError:  # lost a race with another registration of the same MAC
        db.session.rollback()
        return register_lock(agency, mac=mac, name=name, address=address, timezone=timezone, by=by)
    log.info("lock %s registered by agency %s", mac, agency.id)
    broker_credentials.grant([lock.id])  # the lock can log in to the broker as soon as it is provisioned
    return lock


def _required_text(value: str | None, most: int, missing: str, too_long: str) -> str:
    value = (value or "").strip()
    if not value:
        raise DomainError(missing)
    if len(value) > most:
        raise DomainError(too_long)
    return value


def _lock_name(name: str | None) -> str:
    return _required_text(name, 120, "The lock needs a name.", "The lock's name can have at most 120 characters.")


def _lock_address(address: str | None) -> str:
    return _required_text(address, 500, "The lock needs the property's address.",
                          "The address can have at most 500 characters.")


def _lock_zone(timezone: str | None) -> str:
    timezone = (timezone or "").strip()
    if not is_valid_zone(timezone):
        raise DomainError("Unknown time zone; use an IANA name such as Europe/Paris.")
    return timezone


def update_lock(lock: Lock, *, name: str | None = None, address: str | None = None,
                timezone: str | None = None, checkin_time: time | None = None,
                checkout_time: time | None = None) -> Lock:
    """Edit a lock's descriptive fields; None leaves a field as it is. Same rules as registration.
    Check-in/out times are whole minutes of the property's wall clock (calendar feeds use them)."""
    changes: dict = {}
    if name is not None:
        changes["name"] = _lock_name(name)
    if address is not None:
        changes["address"] = _lock_address(address)
    if timezone is not None:
        changes["timezone"] = _lock_zone(timezone)
    for key, value in (("checkin_time", checkin_time), ("checkout_time", checkout_time)):
        if value is not None:
            if value.second or value.microsecond or value.tzinfo is not None:
                raise DomainError(f"{key} is a wall-clock time in whole minutes, like 15:00.")
            changes[key] = value
    moved = any(key in changes and changes[key] != getattr(lock, key)
                for key in ("timezone", "checkin_time", "checkout_time"))
    for key, value in changes.items():
        setattr(lock, key, value)
    if moved:  # the feed's stays fall at new times: fetch it in full at once (no 304 on an unchanged feed)
        db.session.execute(sa.update(CalendarFeed).where(CalendarFeed.lock_id == lock.id)
                           .values(etag=None, last_modified=None, last_attempt_at=None))
    db.session.commit()
    return lock


def lock_credentials(lock: Lock) -> dict:
    """For the bridge: {"lock_id": str, "secret": bytes (32), "mqtt_password": str}."""
    return {"lock_id": lock.id, "secret": lock.secret, "mqtt_password": lock.mqtt_password}


def provision(lock: Lock, *, by: User, config, remote_addr: str | None = None) -> dict:
    """What the installer tool writes into the lock: secret, backup digest, broker credentials.
    Each call is audited. The secret is returned to the caller and never logged."""
    audit(lock.agency_id, "provision", user=by, lock_id=lock.id, remote_addr=remote_addr)
    db.session.commit()
    log.info("lock %s provisioned by user %s", lock.id, by.id)
    return {
        "lock_id": lock.id,
        "secret": lock.secret.hex(),
        "backup_digest": lock.digest(lock.backup_key).hex(),
        "mqtt": {"host": config["MQTT_PUBLIC_HOST"], "port": int(config["MQTT_PUBLIC_PORT"]),
                 "tls": bool(config["MQTT_PUBLIC_TLS"]), "username": lock.id, "password": lock.mqtt_password},
        # the release public key the lock checks firmware updates with (None: no release key configured)
        "fw_pubkey": public_key_hex(config.get("FIRMWARE_SIGNING_KEY")),
    }


def reveal_backup_key(lock: Lock, *, by: User, remote_addr: str | None = None) -> str:
    audit(lock.agency_id, "reveal_backup_key", user=by, lock_id=lock.id, remote_addr=remote_addr)
    db.session.commit()
    return lock.backup_key


# A lock holds at most this many live codes: the protocol carries at most 200 in one state (docs/protocol.md),
# and the lock's code store is sized for it. The bridge refuses to publish a larger set.
MAX_LIVE_CODES = 200


def _live_code_count(lock_id: str, now: datetime) -> int:
    return db.session.scalar(sa.select(sa.func.count(Code.id)).where(
        Code.lock_id == lock_id, Code.revoked_at.is_(None), Code.valid_until > now)) or 0


def _live_codes_overlapping(lock_id: str, start: datetime, end: datetime) -> set[str]:
    return set(db.session.scalars(sa.select(Code.code).where(
        Code.lock_id == lock_id, Code.revoked_at.is_(None),
        Code.valid_from < end, Code.valid_until > start)))


# ---------------------------------------------------------------- codes


def _check_period(valid_from: datetime, valid_until: datetime, now: datetime) -> None:
    if valid_until <= valid_from:
        raise DomainError("The check-out must be after the check-in.")
    if valid_until <= now:
        raise DomainError("This period has already ended.")
    if valid_until - valid_from > MAX_PERIOD:
        raise DomainError("A code can last at most one year.")
    if valid_until > LAST_LOCK_TIME:
        raise DomainError(f"A code must end by {LAST_LOCK_TIME:%Y-%m-%d} (the lock counts time in 32 bits).")


def _taken_digits(lock: Lock, start: datetime, end: datetime, *, except_code: int | None = None) -> set[str]:
    """Digits a code for [start, end) may not have: overlapping live codes, the backup key, and a backup key
    being replaced (the old one still opens the door until the new one is installed)."""
    q = sa.select(Code.code).where(Code.lock_id == lock.id, Code.revoked_at.is_(None),
                                   Code.valid_from < end, Code.valid_until > start)
    if except_code is not None:
        q = q.where(Code.id != except_code)
    taken = set(db.session.scalars(q)) | {lock.backup_key}
    taken |= set(db.session.scalars(sa.select(BackupKeyRotation.old_key).where(
        BackupKeyRotation.lock_id == lock.id, BackupKeyRotation.installed_at.is_(None))))
    return taken


def generate_code(lock: Lock, *, valid_from: datetime, valid_until: datetime, by: User | None,
                  customer_name: str | None = None, customer_email: str | None = None,
                  locale: str = "en", now: datetime | None = None, reservation_uid: str | None = None) -> Code:
    """Make a code for [valid_from, valid_until) on an active lock, and queue the mails (owner, the
    generating staff member if not the owner, the customer if given) in the same transaction.
    `by` None with a `reservation_uid`: the code is born from the lock's reservation feed (source "calendar")."""
    now = now or utcnow()
    valid_from, valid_until = aware(valid_from), aware(valid_until)
    if lock.is_decommissioned:
        raise LockNotActive("This lock is decommissioned: it takes no more codes.")
    if not lock.is_active:
        raise LockNotActive("This lock has not come online yet: codes can be generated once it is active.")
    _check_period(valid_from, valid_until, now)
    customer_name = (customer_name or "").strip() or None
    customer_email = User.normalize_email(customer_email) if customer_email and customer_email.strip() else None

    # Bump the revision first: the UPDATE takes the lock's row lock (PostgreSQL) / the write lock (SQLite),
    # so two concurrent generations for one lock cannot both pick the same free code.
    revision = lock.bump_revision()
    if _live_code_count(lock.id, now) >= MAX_LIVE_CODES:
        db.session.rollback()
        raise Conflict(f"This lock already holds {MAX_LIVE_CODES} codes that have not ended: revoke one or wait "
                       "until one expires.")
    try:
        digits = codegen.pick(_taken_digits(lock, valid_from, valid_until))
    except codegen.CodeSpaceExhausted:
        db.session.rollback()
        raise Conflict("No free code is left for this period on this lock.")
    code = Code(lock_id=lock.id, agency_id=lock.agency_id, code=digits, valid_from=valid_from,
                valid_until=valid_until, customer_name=customer_name, customer_email=customer_email,
                created_by_id=by.id if by else None, created_at=now, revision=revision,
                locale=codemail.locale_or_default(locale), source="calendar" if reservation_uid else "manual",
                reservation_uid=reservation_uid, feed_absent=0)
    db.session.add(code)
    db.session.flush()

    codemail.agency_copies(code, by)
    if customer_email:
        codemail.guest_copy(code)
    webhook_events.emit(lock.agency_id, "code.created", webhook_events.code_payload(code))
    db.session.commit()
    log.info("code %s generated for lock %s (revision %s)", code.id, lock.id, revision)
    return code


def _code_mail(code: Code, **extra) -> dict:
    """Context of the owner's mails about a feed's code (moved, cancelled): from the agency, linking the lock."""
    lock = code.lock
    return dict(lock=lock, code=code, tz=lock.timezone, start_local=fmt_local(code.valid_from, lock.timezone),
                end_local=fmt_local(code.valid_until, lock.timezone),
                lock_link=absolute_url("locks.show", lock_id=lock.id), **from_agency(lock.agency), **extra)


def send_guest_copy(code: Code, *, commit: bool = True) -> None:
    """Queue the guest's copy of a code to code.customer_email (what a tenant needs, nothing more)."""
    if not code.customer_email:
        raise DomainError("This code has no guest email yet.")
    if code.revoked_at is not None or code.valid_until <= utcnow():
        raise DomainError("This code is no longer valid: no copy is sent.")
    codemail.guest_copy(code)
    if commit:
        db.session.commit()


def set_guest(code: Code, *, email: str | None, name: str | None = None, send: bool = True) -> Code:
    """Staff add (or correct) the guest of a code, typically one born from a feed that carried no email;
    with `send`, the guest gets their copy now."""
    if email is not None:
        code.customer_email = User.normalize_email(email) if email.strip() else None
    if name is not None:
        code.customer_name = name.strip()[:120] or None
    if send and code.customer_email:
        send_guest_copy(code, commit=False)
    db.session.commit()
    return code


def move_code(code: Code, *, valid_from: datetime, valid_until: datetime, now: datetime | None = None) -> bool:
    """Give a live code a new window (its reservation's dates changed). The guest keeps the digits they were
    sent unless another code overlapping the new window holds them (then new digits, and a guest whose email is
    known gets their new copy). The owner is told.
    Returns False when nothing changed."""
    now = now or utcnow()
    valid_from, valid_until = aware(valid_from), aware(valid_until)
    if (code.valid_from, code.valid_until) == (valid_from, valid_until) or code.revoked_at is not None:
        return False
    _check_period(valid_from, valid_until, now)
    lock = code.lock
    revision = lock.bump_revision()
    old_local = (fmt_local(code.valid_from, lock.timezone), fmt_local(code.valid_until, lock.timezone))
    taken = _taken_digits(lock, valid_from, valid_until, except_code=code.id)
    old_digits = code.code
    if code.code in taken:
        code.code = codegen.pick(taken)
    code.valid_from, code.valid_until = valid_from, valid_until
    code.revision, code.on_lock_at, code.expired_noted_at = revision, None, None
    guest_told = code.code != old_digits and bool(code.customer_email) and code.valid_until > now
    enqueue(lock.agency.owner.email, "code_moved", f"{lock.name}: stay moved, code {code.code}",
            **_code_mail(code, old_start=old_local[0], old_end=old_local[1], old_digits=old_digits,
                         guest_told=guest_told))
    if guest_told:  # the digits the guest was sent no longer open: they get the new ones, with the new dates
        codemail.guest_copy(code)
    webhook_events.emit(lock.agency_id, "code.moved", webhook_events.code_payload(code))
    db.session.commit()
    return True


def revoke_code(code: Code, *, by: User | None, now: datetime | None = None, reason: str | None = None) -> Code:
    """Revoke a code (idempotent). Bumps the lock's revision so the bridge removes it from the lock.
    `by` None: the lock's reservation feed cancelled it (`reason` says how); the owner is emailed."""
    now = now or utcnow()
    if code.revoked_at is not None:
        return code
    code.revoked_revision = code.lock.bump_revision()
    code.revoked_at = now
    code.revoked_by_id = by.id if by else None
    audit(code.agency_id, "revoke_code" if by else "revoke_code_feed", user=by, lock_id=code.lock_id)
    if by is None:
        enqueue(code.lock.agency.owner.email, "code_cancelled", f"{code.lock.name}: stay cancelled, code revoked",
                **_code_mail(code, reason=reason or "the reservation was cancelled"))
    webhook_events.emit(code.agency_id, "code.revoked", webhook_events.code_payload(code))
    db.session.commit()
    return code


def overlapping_codes(code: Code) -> list[Code]:
    """The lock's other live codes whose periods overlap `code`'s (allowed, e.g. a cleaner's code during a
    stay, but worth a warning: two guests may have been given the same nights)."""
    return list(db.session.scalars(sa.select(Code).where(
        Code.lock_id == code.lock_id, Code.id != code.id, Code.revoked_at.is_(None),
        Code.valid_from < code.valid_until, Code.valid_until > code.valid_from).order_by(Code.valid_from)))


def decommission_lock(lock: Lock, *, by: User, now: datetime | None = None) -> Lock:
    """Take a lock out of service for good: its live codes are revoked, its secret is replaced by random bytes
    nobody ever saw (nothing it sends verifies any more), its broker login is removed, and its MAC is free to register again. The lock and its history (codes, access log, audits) live on
    under an archive id ("zz…", never a MAC). Returns the archived lock."""
    now = now or utcnow()
    if lock.is_decommissioned:
        return lock
    old_id = lock.id
    revision = lock.bump_revision()
    live = db.session.scalars(sa.select(Code).where(Code.lock_id == old_id, Code.revoked_at.is_(None))
                              .order_by(Code.id)).all()
    db.session.execute(sa.update(Code).where(Code.lock_id == old_id, Code.revoked_at.is_(None))
                       .values(revoked_at=now, revoked_by_id=by.id, revoked_revision=revision))
    for code in live:  # integrators hear of each, under the lock id they knew (the MAC, not the archive id)
        webhook_events.emit(lock.agency_id, "code.revoked", dict(webhook_events.code_payload(code),
                                                                 lock_id=old_id, revoked_at=webhook_events.iso(now)))
    new_id = "zz" + "".join(secrets.choice("ghjkmnpqrstvwxyz") for _ in range(10))
    table = Lock.__table__
    row = {c.name: getattr(lock, c.key) for c in table.columns}
    row.update(id=new_id, status="retired", secret=secrets.token_bytes(32), decommissioned_at=now,
               decommissioned_mac=old_id)
    db.session.execute(table.insert().values(**row))
    # every table pointing at the lock follows it to the archive id (history kept); the bridge's session
    # state is dropped (a lock under that MAC starts from scratch)
    for child in db.metadata.sorted_tables:
        for fk in child.foreign_keys:
            if fk.column.table is table and child is not table:
                db.session.execute(child.update().where(fk.parent == old_id).values({fk.parent.name: new_id}))
    db.session.execute(sa.update(AuditEvent).where(AuditEvent.lock_id == old_id).values(lock_id=new_id))
    db.session.execute(sa.delete(BridgeLockState).where(BridgeLockState.lock_id == old_id))
    db.session.expunge(lock)
    db.session.execute(table.delete().where(table.c.id == old_id))
    audit(lock.agency_id, "decommission", user=by, lock_id=new_id)
    db.session.commit()
    broker_credentials.revoke(old_id)  # if the broker is unreachable now, the bridge's next reconcile does it
    log.info("lock %s decommissioned (archived as %s)", old_id, new_id)
    return db.session.get(Lock, new_id)


# ---------------------------------------------------------------- operations the MQTT bridge calls


HEALTH_INTS = {"uptime": (0, 2**40), "heap_free": (0, 2**32), "heap_block": (0, 2**32), "rssi": (-127, 0),
               "flash_writes": (0, 2**40)}
RESET_CAUSES = ("power_on", "watchdog", "crash", "software", "hard", "deep_sleep", "other")


def clean_health(h) -> dict | None:
    """A hello's "health" object -> the figures the cloud keeps (anything unknown or out of range is left out);
    None when there is nothing usable (an older firmware sends none)."""
    if not isinstance(h, dict):
        return None
    out = {}
    for k, (lo, hi) in HEALTH_INTS.items():
        v = h.get(k)
        if isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi:
            out[k] = v
    if h.get("reset") in RESET_CAUSES:
        out["reset"] = h["reset"]
    return out or None


def lock_hello(lock: Lock, *, firmware: str, boot_count: int, lock_time: int | None, revision: int,
               now: datetime | None = None, health: dict | None = None, commit: bool = True) -> dict:
    """A verified hello from the lock (the bridge checked its HMAC and counter).

    Marks the lock active (the first time, emails the owner "lock online" with the current backup key),
    updates last_seen_at, firmware_version, boot_count, reported_revision, clock_skew_s
    (lock_time − cloud time, None when the lock has no trusted time) and the health figures (clean_health).
    Returns {"activated": bool, "push": bool} — push is True when the lock's revision differs from the
    desired one, i.e. the bridge should send desired_state(lock). commit=False leaves the commit to the caller
    (the bridge applies a batch of uplinks in one transaction).
    """
    now = now or utcnow()
    activated = False
    if lock.status != "active":
        # conditional UPDATE: with several bridge workers, exactly one of them activates (and mails)
        res = db.session.execute(sa.update(Lock).where(Lock.id == lock.id, Lock.status == "registered")
                                 .values(status="active", activated_at=now))
        activated = res.rowcount == 1
        db.session.refresh(lock, ["status", "activated_at"])
    lock.firmware_version = (firmware or "")[:40] or None
    lock.boot_count = boot_count
    lock.last_seen_at = now
    lock.reported_revision = revision
    lock.clock_skew_s = None if lock_time is None else int(lock_time) - to_epoch(now)
    alerts.on_clock(lock, lock.clock_skew_s, now)
    h = clean_health(health)
    if h is not None:
        lock.health = h
        lock.health_at = now
    if activated:
        enqueue(lock.agency.owner.email, "lock_online", f"{lock.name} is online",
                lock=lock, backup_key=lock.backup_key, when=fmt_local(now, lock.timezone))
        log.info("lock %s is active", lock.id)
    if commit:
        db.session.commit()
    return {"activated": activated, "push": revision != lock.desired_revision}


def desired_state(lock: Lock, now: datetime | None = None) -> dict:
    """What the lock should hold: {"revision": int, "codes": [{"id", "digest": bytes, "from": int,
    "until": int}], "backup_digest": bytes}. Codes that are revoked or expired (until <= now) are left out."""
    return desired_states([lock], now)[lock.id]


def desired_states(locks: list[Lock], now: datetime | None = None) -> dict[str, dict]:
    """desired_state() of several locks (lock id → state), their codes read in one query."""
    now = now or utcnow()
    by_lock: dict[str, list[Code]] = {lk.id: [] for lk in locks}
    if by_lock:
        for c in db.session.scalars(sa.select(Code).where(
                among(Code.lock_id, by_lock), Code.revoked_at.is_(None), Code.valid_until > now)
                .order_by(Code.lock_id, Code.id)):
            by_lock[c.lock_id].append(c)
    return {lk.id: {
        "revision": lk.desired_revision,
        "codes": [{"id": c.id, "digest": lk.digest(c.code), "from": to_epoch(c.valid_from),
                   "until": to_epoch(c.valid_until)} for c in by_lock[lk.id]],
        "backup_digest": lk.digest(lk.backup_key),
    } for lk in locks}


def expire_due(now: datetime | None = None) -> list[str]:
    """Called periodically by the bridge. Codes whose end passed get expired_noted_at and their lock's
    desired_revision is bumped once. Returns the ids of the locks whose desired state changed."""
    now = now or utcnow()
    rows = db.session.execute(sa.select(Code.id, Code.lock_id).where(
        Code.revoked_at.is_(None), Code.expired_noted_at.is_(None), Code.valid_until <= now)).all()
    if not rows:
        return []
    lock_ids = sorted({r.lock_id for r in rows})
    db.session.execute(sa.update(Code).where(Code.id.in_([r.id for r in rows]), Code.expired_noted_at.is_(None))
                       .values(expired_noted_at=now))
    db.session.execute(sa.update(Lock).where(Lock.id.in_(lock_ids))
                       .values(desired_revision=Lock.desired_revision + 1))
    statequeue.enqueue(lock_ids)
    db.session.commit()
    return lock_ids


def codeset_acknowledged(lock: Lock, revision: int, now: datetime | None = None, commit: bool = True) -> None:
    """The lock confirmed it installed `revision`. acked_revision = max(acked, revision) (capped at the
    desired revision); live codes included at or before it get on_lock_at; backup-key rotations covered by
    it are marked installed and the owner is emailed (old key first used, replaced at, new key).
    commit=False leaves the commit to the caller (the bridge's batch)."""
    codesets_acknowledged({lock.id: int(revision)}, now=now, commit=commit)


def codesets_acknowledged(revisions: dict[str, int], now: datetime | None = None,
                          commit: bool = True) -> dict[str, int]:
    """codeset_acknowledged for several locks (lock id → acknowledged revision) in a few statements for all of
    them: the bridge applies a chunk of acks at once. The locks' rows are locked (in id order: two workers cannot
    deadlock on them) so that another worker recording the same revision waits and then finds nothing new.
    Returns each lock's acked revision now."""
    now = now or utcnow()
    ids = sorted(revisions)
    if not ids:
        return {}
    locks = db.session.scalars(sa.select(Lock).where(among(Lock.id, ids)).order_by(Lock.id).with_for_update()
                               .execution_options(populate_existing=True)).all()
    moved: dict[str, int] = {}
    for lock in locks:
        rev = min(int(revisions[lock.id]), lock.desired_revision)
        if rev > lock.acked_revision:
            moved[lock.id] = rev
    if not moved:
        if commit:
            db.session.commit()
        return {lk.id: lk.acked_revision for lk in locks}
    by_id = {lk.id: lk for lk in locks}
    t = Lock.__table__
    db.session.execute(t.update().where(t.c.id == sa.bindparam("lid"), t.c.acked_revision < sa.bindparam("rev"))
                       .values(acked_revision=sa.bindparam("rev")), [{"lid": k, "rev": v} for k, v in moved.items()])
    for lid, rev in moved.items():
        set_committed_value(by_id[lid], "acked_revision", rev)
    arrived = [c for c in db.session.scalars(sa.select(Code).where(
        among(Code.lock_id, moved), Code.on_lock_at.is_(None), Code.revoked_at.is_(None), Code.valid_until > now)
        .order_by(Code.id)) if c.revision <= moved[c.lock_id]]
    if arrived:
        db.session.execute(sa.update(Code).where(Code.id.in_([c.id for c in arrived]), Code.on_lock_at.is_(None))
                           .values(on_lock_at=now))
        for code in arrived:
            set_committed_value(code, "on_lock_at", now)
            webhook_events.emit(code.agency_id, "code.on_lock", webhook_events.code_payload(code))
    # revoked codes these revisions no longer carry: the locks confirmed they dropped them
    c = Code.__table__.c
    db.session.execute(Code.__table__.update().where(
        c.lock_id == sa.bindparam("lid"), c.revoked_at.is_not(None), c.removed_at.is_(None),
        c.revoked_revision <= sa.bindparam("rev")).values(removed_at=now),
        [{"lid": k, "rev": v} for k, v in moved.items()])
    rotations = [r for r in db.session.scalars(sa.select(BackupKeyRotation).where(
        among(BackupKeyRotation.lock_id, moved), BackupKeyRotation.installed_at.is_(None)))
        if r.revision <= moved[r.lock_id]]
    for rot in rotations:
        lock = by_id[rot.lock_id]
        claimed = db.session.execute(sa.update(BackupKeyRotation).where(
            BackupKeyRotation.id == rot.id, BackupKeyRotation.installed_at.is_(None)).values(installed_at=now))
        if claimed.rowcount != 1:
            continue
        alerts.on_backup_replaced(lock, now)
        enqueue(lock.agency.owner.email, "backup_rotated", f"New backup key for {lock.name}",
                lock=lock, new_key=rot.new_key,
                first_used=fmt_local(rot.first_used_at, lock.timezone) if rot.first_used_at else "unknown",
                replaced=fmt_local(now, lock.timezone))
    out = {lk.id: lk.acked_revision for lk in locks}
    if commit:
        db.session.commit()
    return out


def record_events(lock: Lock, events: list[dict]) -> int:
    """Store the lock's access-log entries [{"seq": int, "t": int|None, "kind": str, "code_id": int|None,
    …}], deduplicated by (lock, seq). A "lockout" emails the owner. Returns how many were new."""
    by_seq: dict[int, dict] = {}
    for ev in events:
        by_seq.setdefault(int(ev["seq"]), ev)
    if not by_seq:
        return 0
    for attempt in range(2):
        known = set(db.session.scalars(sa.select(LockEvent.seq).where(
            LockEvent.lock_id == lock.id, LockEvent.seq.in_(list(by_seq)))))
        new = [(seq, ev) for seq, ev in sorted(by_seq.items()) if seq not in known]
        now = utcnow()
        for seq, ev in new:
            extra = {k: v for k, v in ev.items() if k not in {"seq", "t", "kind", "code_id"}}
            kind = str(ev.get("kind", "unknown"))[:32]
            db.session.add(LockEvent(lock_id=lock.id, seq=seq, t=from_epoch(ev.get("t")), kind=kind,
                                     code_id=ev.get("code_id"), detail=extra or None, received_at=now))
            # one mail per episode (a lockout's 4 doubling steps are one), the backup key's use at once
            alerts.on_lock_event(lock, kind, from_epoch(ev.get("t")), extra, now)
            if kind == "time_set" and extra.get("source") == "server":
                _clock_set_from_cloud(lock, from_epoch(ev.get("t")), now)
            if kind in ("opened", "opened_backup"):
                webhook_events.emit(lock.agency_id, "access.opened", {
                    "lock_id": lock.id, "code_id": ev.get("code_id"), "backup_key": kind == "opened_backup",
                    "seq": seq, "at": webhook_events.iso(from_epoch(ev.get("t")))})
        try:
            db.session.commit()
            return len(new)
        except IntegrityError:  # another bridge worker stored some of them meanwhile
            db.session.rollback()
    return 0


def _clock_set_from_cloud(lock: Lock, at: datetime | None, now: datetime) -> None:
    """The lock set its clock from the cloud's `time` reply, which answers its hello: from then on its clock is
    the cloud's, so the skew that hello measured (before the correction) is over, and so is a clock alert. A
    correction older than the last hello (an entry uploaded late) says nothing about the skew measured since."""
    if at is None or lock.last_seen_at is None or at < lock.last_seen_at - CLOCK_SET_SLACK:
        return
    lock.clock_skew_s = 0
    alerts.on_clock(lock, 0, now)


def rotate_backup(lock: Lock, *, first_used_at: int | None, now: datetime | None = None) -> str:
    """The lock asks for a new backup key (24 h after the old one's first use). Picks a new key (same rules
    as codes, different from the old one and from live codes), bumps desired_revision and records a
    BackupKeyRotation (old key, first use). Idempotent: with a rotation still pending (not acknowledged by
    the lock), returns that rotation's key without changing anything. Returns the new key."""
    now = now or utcnow()
    revision = lock.bump_revision()  # first: serialises concurrent requests for this lock
    pending = db.session.scalar(sa.select(BackupKeyRotation).where(
        BackupKeyRotation.lock_id == lock.id, BackupKeyRotation.installed_at.is_(None)))
    if pending is not None:
        key = pending.new_key
        db.session.rollback()  # undo the bump: nothing changes
        return key
    old = lock.backup_key
    far = now + MAX_PERIOD * 10
    taken = _live_codes_overlapping(lock.id, now, far) | {old}
    lock.backup_key = codegen.pick(taken)
    db.session.add(BackupKeyRotation(lock_id=lock.id, old_key=old, new_key=lock.backup_key,
                                     first_used_at=from_epoch(first_used_at), requested_at=now,
                                     revision=revision))
    db.session.commit()
    log.info("lock %s backup key rotated (revision %s)", lock.id, revision)
    return lock.backup_key
