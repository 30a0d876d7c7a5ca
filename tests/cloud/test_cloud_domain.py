"""The domain operations the MQTT bridge calls (cloud/domain.py), on SQLite and PostgreSQL."""
from datetime import datetime, timedelta, timezone

import hashlib
import hmac

import pytest
import sqlalchemy as sa

from cloud import codegen, domain
from cloud.staff import invite_staff
from cloud.extensions import db
from cloud.models import BackupKeyRotation, Code, Lock, LockEvent, OutboxMail, User

UTC = timezone.utc


def _lock(lock_id):
    return db.session.get(Lock, lock_id)


def _gen(lock, start, end, **kw):
    owner = lock.agency.owner
    return domain.generate_code(lock, valid_from=start, valid_until=end, by=owner, **kw)


def _mails(kind=None):
    q = sa.select(OutboxMail)
    if kind:
        q = q.where(OutboxMail.kind == kind)
    return db.session.scalars(q).all()


def test_registration_creates_secret_and_backup_key(app, make_agency, make_lock):
    ag = make_agency()
    lock_id = make_lock(ag, active=False, mac="24:A1:60:54:AB:3C")
    with app.app_context():
        lock = _lock("24a16054ab3c")
        assert lock_id == "24a16054ab3c" and lock.status == "registered"
        assert len(lock.secret) == 32 and not codegen.is_trivial(lock.backup_key)
        assert lock.desired_revision == 1 and lock.acked_revision == 0
        assert lock.digest("1357") == hmac.new(lock.secret, b"1357", hashlib.sha256).digest()
        creds = domain.lock_credentials(lock)
        assert creds["secret"] == lock.secret
        assert creds["mqtt_password"] == hmac.new(lock.secret, b"mqtt-password", hashlib.sha256).hexdigest()[:32]


def test_hello_activates_once_and_mails_backup_key(app, make_agency, make_lock):
    ag = make_agency()
    lock_id = make_lock(ag, active=False)
    now = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)
    with app.app_context():
        lock = _lock(lock_id)
        r = domain.lock_hello(lock, firmware="1.2.0", boot_count=7, lock_time=int(now.timestamp()) + 3,
                              revision=0, now=now)
        assert r == {"activated": True, "push": True}
        lock = _lock(lock_id)
        assert lock.status == "active" and lock.activated_at == now and lock.last_seen_at == now
        assert (lock.firmware_version, lock.boot_count, lock.clock_skew_s) == ("1.2.0", 7, 3)
        online = _mails("lock_online")
        assert len(online) == 1 and online[0].recipient == ag.email and lock.backup_key in online[0].text_body
        later = now + timedelta(hours=1)
        r = domain.lock_hello(lock, firmware="1.2.1", boot_count=8, lock_time=None, revision=1, now=later)
        assert r == {"activated": False, "push": False}
        lock = _lock(lock_id)
        assert lock.activated_at == now and lock.last_seen_at == later and lock.clock_skew_s is None
        assert len(_mails("lock_online")) == 1


def test_desired_state_and_revisions(app, make_agency, make_lock):
    ag = make_agency()
    lock_id = make_lock(ag)
    now = datetime.now(UTC).replace(microsecond=0)
    with app.app_context():
        lock = _lock(lock_id)
        rev0 = lock.desired_revision
        c1 = _gen(lock, now - timedelta(hours=1), now + timedelta(days=2))
        c2 = _gen(lock, now + timedelta(days=3), now + timedelta(days=5))
        lock = _lock(lock_id)
        assert lock.desired_revision == rev0 + 2 and c2.revision == rev0 + 2
        state = domain.desired_state(lock, now=now)
        assert state["revision"] == lock.desired_revision
        assert [c["id"] for c in state["codes"]] == [c1.id, c2.id]
        first = state["codes"][0]
        assert first["digest"] == lock.digest(c1.code) and isinstance(first["digest"], bytes)
        assert first["from"] == int(c1.valid_from.timestamp()) and first["until"] == int(c1.valid_until.timestamp())
        assert state["backup_digest"] == lock.digest(lock.backup_key)
        domain.revoke_code(db.session.get(Code, c1.id), by=lock.agency.owner)
        lock = _lock(lock_id)
        assert lock.desired_revision == rev0 + 3
        assert [c["id"] for c in domain.desired_state(lock, now=now)["codes"]] == [c2.id]


def test_expire_due_bumps_once(app, make_agency, make_lock):
    ag = make_agency()
    a, b = make_lock(ag), make_lock(ag)
    now = datetime.now(UTC).replace(microsecond=0)
    with app.app_context():
        c = _gen(_lock(a), now, now + timedelta(hours=2))
        _gen(_lock(b), now, now + timedelta(days=2))
        rev_a, rev_b = _lock(a).desired_revision, _lock(b).desired_revision
        assert domain.expire_due(now + timedelta(hours=1)) == []
        later = now + timedelta(hours=3)
        assert domain.expire_due(later) == [a]
        assert domain.expire_due(later) == []  # noted once
        assert _lock(a).desired_revision == rev_a + 1 and _lock(b).desired_revision == rev_b
        assert domain.desired_state(_lock(a), now=later)["codes"] == []
        assert db.session.get(Code, c.id).status(later) == "expired"


def test_codeset_acknowledged_marks_codes_on_lock(app, make_agency, make_lock):
    ag = make_agency()
    lock_id = make_lock(ag)
    now = datetime.now(UTC).replace(microsecond=0)
    with app.app_context():
        c1 = _gen(_lock(lock_id), now, now + timedelta(days=1))
        rev1 = _lock(lock_id).desired_revision
        c2 = _gen(_lock(lock_id), now, now + timedelta(days=1))
        domain.codeset_acknowledged(_lock(lock_id), rev1, now=now)
        assert _lock(lock_id).acked_revision == rev1
        assert db.session.get(Code, c1.id).on_lock_at == now and db.session.get(Code, c1.id).on_lock == "on the lock"
        assert db.session.get(Code, c2.id).on_lock_at is None and db.session.get(Code, c2.id).on_lock == "pending"
        domain.codeset_acknowledged(_lock(lock_id), rev1 - 1, now=now)  # never goes back
        assert _lock(lock_id).acked_revision == rev1
        domain.codeset_acknowledged(_lock(lock_id), 10 ** 6, now=now)  # capped at desired
        lock = _lock(lock_id)
        assert lock.acked_revision == lock.desired_revision
        assert db.session.get(Code, c2.id).on_lock_at == now


def test_record_events_dedupes_and_mails_lockouts(app, make_agency, make_lock):
    ag = make_agency()
    lock_id = make_lock(ag)
    t = int(datetime(2030, 1, 1, tzinfo=UTC).timestamp())
    with app.app_context():
        evs = [{"seq": 1, "t": t, "kind": "open", "code_id": 5},
               {"seq": 2, "t": t + 5, "kind": "refused", "code_id": None},
               {"seq": 3, "t": None, "kind": "lockout", "code_id": None, "seconds": 30}]
        assert domain.record_events(_lock(lock_id), evs) == 3
        assert domain.record_events(_lock(lock_id), evs + [{"seq": 4, "t": t + 9, "kind": "open"}]) == 1
        assert domain.record_events(_lock(lock_id), []) == 0
        rows = db.session.scalars(sa.select(LockEvent).order_by(LockEvent.seq)).all()
        assert [r.seq for r in rows] == [1, 2, 3, 4]
        assert rows[0].t == datetime(2030, 1, 1, tzinfo=UTC) and rows[0].code_id == 5
        assert rows[2].t is None and rows[2].detail == {"seconds": 30}
        lockouts = [m for m in _mails("alert") if "locked out" in m.subject]
        assert len(lockouts) == 1 and lockouts[0].recipient == ag.email


def test_rotate_backup_is_idempotent_and_mails_after_ack(app, make_agency, make_lock):
    ag = make_agency()
    lock_id = make_lock(ag)
    now = datetime(2030, 6, 1, 10, 0, tzinfo=UTC)
    used = int((now - timedelta(hours=24)).timestamp())
    with app.app_context():
        old = _lock(lock_id).backup_key
        rev = _lock(lock_id).desired_revision
        new = domain.rotate_backup(_lock(lock_id), first_used_at=used, now=now)
        assert new != old and not codegen.is_trivial(new)
        lock = _lock(lock_id)
        assert lock.backup_key == new and lock.desired_revision == rev + 1
        assert domain.desired_state(lock, now=now)["backup_digest"] == lock.digest(new)
        # the lock asks again before installing it: same key, no new revision
        assert domain.rotate_backup(_lock(lock_id), first_used_at=used, now=now) == new
        assert _lock(lock_id).desired_revision == rev + 1
        rot = db.session.scalar(sa.select(BackupKeyRotation))
        assert (rot.old_key, rot.new_key, rot.first_used_at, rot.installed_at) == (old, new, now - timedelta(hours=24), None)
        assert _mails("backup_rotated") == []
        domain.codeset_acknowledged(_lock(lock_id), rev, now=now)  # an older revision: not yet
        assert _mails("backup_rotated") == []
        domain.codeset_acknowledged(_lock(lock_id), rev + 1, now=now + timedelta(minutes=1))
        mails = _mails("backup_rotated")
        assert len(mails) == 1 and mails[0].recipient == ag.email
        assert new in mails[0].text_body and old not in mails[0].text_body.replace(new, "")
        assert "2030-05-31 12:00 CEST" in mails[0].text_body  # first use, in the property's zone
        # after installation a new rotation is possible again
        assert domain.rotate_backup(_lock(lock_id), first_used_at=None, now=now) != new


def test_codes_are_random_unique_and_never_the_backup_key(app, make_agency, make_lock, monkeypatch):
    ag = make_agency()
    lock_id = make_lock(ag)
    now = datetime.now(UTC).replace(microsecond=0)
    with app.app_context():
        lock = _lock(lock_id)
        backup = codegen.ALLOWED.index(lock.backup_key)
        # two draws that are not the lock's (random) backup key
        first, second = [i for i in (100, 200, 300) if i != backup][:2]
        # force the random source to propose the backup key first, then another code; for the overlapping
        # second code, propose the first code again (taken), then a free one
        seq = iter([backup, first, first, second])
        monkeypatch.setattr(codegen.secrets, "randbelow", lambda n: next(seq))
        c1 = _gen(lock, now, now + timedelta(days=2))
        assert c1.code == codegen.ALLOWED[first]
        c2 = _gen(_lock(lock_id), now + timedelta(days=1), now + timedelta(days=3))  # overlaps c1
        assert c2.code == codegen.ALLOWED[second]


def test_overlap_rule_allows_reuse_outside_window(app, make_agency, make_lock, monkeypatch):
    ag = make_agency()
    lock_id = make_lock(ag)
    now = datetime.now(UTC).replace(microsecond=0)
    with app.app_context():
        monkeypatch.setattr(codegen.secrets, "randbelow", lambda n: 300)
        if codegen.ALLOWED[300] == _lock(lock_id).backup_key:
            pytest.skip("backup key happens to be the forced code")
        c1 = _gen(_lock(lock_id), now, now + timedelta(days=1))
        c2 = _gen(_lock(lock_id), now + timedelta(days=1), now + timedelta(days=2))  # half-open: no overlap
        assert c1.code == c2.code


def test_a_lock_holds_at_most_200_live_codes(app, make_agency, make_lock):
    """The protocol carries 200 codes to a lock: the 201st live code is refused with a clear message, and a
    revoked or ended code frees its place."""
    ag = make_agency()
    lock_id = make_lock(ag)
    now = datetime.now(UTC).replace(microsecond=0)
    with app.app_context():
        ended = _gen(_lock(lock_id), now - timedelta(days=1), now + timedelta(hours=1))
        codes = [_gen(_lock(lock_id), now + timedelta(days=i), now + timedelta(days=i + 1))
                 for i in range(domain.MAX_LIVE_CODES - 1)]
        with pytest.raises(domain.Conflict, match="200 codes"):
            _gen(_lock(lock_id), now, now + timedelta(days=2))
        later = now + timedelta(hours=2)  # `ended` is over by then: its place is free again
        extra = domain.generate_code(_lock(lock_id), valid_from=later, valid_until=later + timedelta(days=1),
                                     by=_lock(lock_id).agency.owner, now=later)
        with pytest.raises(domain.Conflict):
            _gen(_lock(lock_id), now, now + timedelta(days=2))
        domain.revoke_code(codes[0], by=_lock(lock_id).agency.owner)
        again = domain.generate_code(_lock(lock_id), valid_from=later, valid_until=later + timedelta(days=2),
                                     by=_lock(lock_id).agency.owner, now=later)
        assert again.id > extra.id > ended.id
        live = db.session.scalar(sa.select(sa.func.count(Code.id)).where(
            Code.lock_id == lock_id, Code.revoked_at.is_(None), Code.valid_until > later))
        assert live == domain.MAX_LIVE_CODES


def test_trivial_codes():
    for c in ["0000", "1111", "1234", "6789", "9876", "3210", "0123", "1212", "9090", "12a4", "123"]:
        assert codegen.is_trivial(c), c
    for c in ["1357", "2580", "1122", "1231", "0912"]:
        assert not codegen.is_trivial(c), c
    assert len(codegen.ALLOWED) == 10000 - 10 - 14 - 90


def test_period_rules_and_inactive_lock(app, make_agency, make_lock):
    ag = make_agency()
    active, idle = make_lock(ag), make_lock(ag, active=False)
    now = datetime.now(UTC).replace(microsecond=0)
    with app.app_context():
        with pytest.raises(domain.LockNotActive):
            _gen(_lock(idle), now, now + timedelta(days=1))
        for start, end, words in [(now + timedelta(days=2), now + timedelta(days=1), "after"),
                                  (now - timedelta(days=3), now - timedelta(days=1), "ended"),
                                  (now, now + timedelta(days=367), "one year")]:
            with pytest.raises(domain.DomainError, match=words):
                _gen(_lock(active), start, end)
        assert db.session.scalar(sa.select(sa.func.count(Code.id))) == 0


def test_generate_queues_mails_in_the_same_transaction(app, make_agency, make_lock):
    ag = make_agency()
    lock_id = make_lock(ag, timezone="America/New_York")
    start = datetime(2031, 7, 1, 19, 0, tzinfo=UTC)
    with app.app_context():
        db.session.execute(sa.delete(OutboxMail))
        db.session.commit()
        code = _gen(_lock(lock_id), start, start + timedelta(days=7), customer_name="Ada",
                    customer_email="Ada@Example.com")
        mails = {m.recipient: m for m in _mails()}
        assert set(mails) == {ag.email, "ada@example.com"}
        tenant = mails["ada@example.com"]
        assert code.code in tenant.text_body and "2031-07-01 15:00 EDT" in tenant.text_body
        assert "America/New_York" in tenant.text_body and "press #" in tenant.text_body
        assert ag.email not in tenant.text_body  # replies reach the agency through Reply-To, not a printed address
        assert ag.name in tenant.text_body and "Door:      Flat 3B" in tenant.text_body  # agency, property, door
        assert tenant.sender_name == ag.name and tenant.reply_to == ag.email
        assert code.code in tenant.html_body and "<ol>" in tenant.html_body


def test_staff_generated_code_also_mails_the_staff_member(app, make_agency, make_lock):
    ag = make_agency()
    lock_id = make_lock(ag)
    now = datetime.now(UTC).replace(microsecond=0)
    with app.app_context():
        owner = db.session.get(User, ag.owner_id)
        staff = invite_staff(owner, email="staff@example.com")
        domain.generate_code(_lock(lock_id), valid_from=now, valid_until=now + timedelta(days=1), by=staff)
        assert {m.recipient for m in _mails("code_agency")} == {ag.email, "staff@example.com"}


def test_concurrent_generation_never_duplicates(app, make_agency, make_lock, monkeypatch):
    """Two requests for the same period at the same time, with a random source that proposes the same code
    to both: generation is serialised per lock, so the second sees the first's code and picks another."""
    import threading
    ag = make_agency()
    lock_id = make_lock(ag)
    with app.app_context():
        backup = _lock(lock_id).backup_key
    picks = iter(i for i in range(1000, 2000) for _ in range(2) if codegen.ALLOWED[i] != backup)
    guard = threading.Lock()

    def randbelow(n):
        with guard:
            return next(picks)
    monkeypatch.setattr(codegen.secrets, "randbelow", randbelow)
    now = datetime.now(UTC).replace(microsecond=0)
    barrier = threading.Barrier(4)
    results, errors = [], []

    def worker():
        try:
            with app.app_context():
                lock = _lock(lock_id)
                barrier.wait()
                results.append(_gen(lock, now, now + timedelta(days=2)).code)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and len(results) == 4 and len(set(results)) == 4
    with app.app_context():
        assert _lock(lock_id).desired_revision == 1 + 4  # registration revision + one bump per code


def test_concurrent_hello_activates_once(app, make_agency, make_lock):
    import threading
    ag = make_agency()
    lock_id = make_lock(ag, active=False)
    barrier = threading.Barrier(3)
    activated = []

    def worker():
        with app.app_context():
            lock = _lock(lock_id)
            barrier.wait()
            activated.append(domain.lock_hello(lock, firmware="1", boot_count=1, lock_time=None,
                                               revision=0)["activated"])
    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(activated) == [False, False, True]
    with app.app_context():
        assert len(_mails("lock_online")) == 1


def test_multiline_address_gives_a_valid_subject(app, make_agency, make_lock, smtp_server, deliver_mail):
    ag = make_agency()
    lock_id = make_lock(ag, address="4 Quay Street\nBristol BS1 4DB")
    now = datetime.now(UTC)
    with app.app_context():
        _gen(_lock(lock_id), now, now + timedelta(days=1), customer_email="t@example.com")
    assert deliver_mail()["sent"] == 3
    [mail] = smtp_server.to("t@example.com")
    assert mail["Subject"] == "Your door code for 4 Quay Street Bristol BS1 4DB"
