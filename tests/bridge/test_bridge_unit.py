"""The bridge's message handling without a broker (Bridge.handle / publish_due with a recording client; cloud/bridge/), on
SQLite and, when TEST_POSTGRES_URL is set, PostgreSQL: every drop reason, counters, the will, dispatch to the
domain, desired-state publication and expiry."""
from __future__ import annotations

import base64
import json
import struct
from datetime import timedelta

import pytest

import cloud.bridge as B  # noqa: F401  (registers bridge_lock_state before the app fixture creates tables)
from cloud.bridge import BridgeLockState, Envelope


@pytest.fixture
def bridge(bridge):
    """The shared recording bridge (tests/conftest.py), set up as at start: state rows, broker auth."""
    bridge.setup()
    return bridge


@pytest.fixture
def lock(app, make_agency, make_lock, bridge):
    from cloud.extensions import db
    from cloud.models import Lock
    agency = make_agency()
    lid = make_lock(agency, active=False)
    secret = bytes(db.session.get(Lock, lid).secret)
    return lid, Envelope(secret), agency


def up(env, lid, obj):
    return f"lock/{lid}/up", env.seal(f"lock/{lid}/up", obj)


def downs(bridge, lid, t=None):
    env = None
    out = []
    from cloud.extensions import db
    from cloud.models import Lock
    env = Envelope(bytes(db.session.get(Lock, lid).secret))
    for topic, payload, retain in bridge.client.sent:
        if topic == f"lock/{lid}/down":
            msg = env.open(topic, payload)
            if t is None or msg["t"] == t:
                out.append((msg, retain))
    return out


def hello(n, will=None, rev=0, t=None, nonce="00112233aabbccdd"):
    return {"v": 1, "t": "hello", "n": n, "will": will, "fw": "0.1.0", "boot": 3, "time": t, "rev": rev,
            "nonce": nonce}


def test_hello_activates_answers_time_and_publishes_the_state(app, bridge, lock, smtp_server, deliver_mail):
    from cloud.extensions import db
    from cloud.models import Lock
    lid, env, agency = lock
    assert bridge.handle(*up(env, lid, hello(10, will=9)))
    lk = db.session.get(Lock, lid)
    assert lk.status == "active" and lk.firmware_version == "0.1.0" and lk.boot_count == 3
    (t, _), = downs(bridge, lid, "time")
    assert t["nonce"] == "00112233aabbccdd"
    assert not downs(bridge, lid, "state")              # the lock is behind: queued, published at once by the loop
    assert bridge.publish_due() == 1
    (state, retained), = downs(bridge, lid, "state")
    assert retained and state["rev"] == lk.desired_revision and state["n"] == 0
    assert base64.b64decode(state["backup"]) == lk.digest(lk.backup_key)
    st = db.session.get(BridgeLockState, lid)
    assert st.online and st.last_counter == 10 and st.will_counter == 9
    deliver_mail()
    assert smtp_server.to(agency.email)


def test_every_drop_is_counted_and_nothing_raises(app, bridge, lock):
    lid, env, _ = lock
    assert bridge.handle(*up(env, lid, hello(5)))
    topic, good = up(env, lid, {"v": 1, "t": "ack", "n": 6, "rev": 1})
    cases = {
        "replay": [(topic, good), (topic, good), up(env, lid, {"v": 1, "t": "ack", "n": 5, "rev": 1})],
        "unknown_lock": [("lock/ffffffffffff/up", Envelope(b"k" * 32).seal("lock/ffffffffffff/up",
                                                                            {"v": 1, "t": "ack", "n": 1}))],
        "bad_signature": [(topic, good[:-2] + b"2}"), up(Envelope(b"x" * 32), lid, {"v": 1, "t": "ack", "n": 99})],
        "oversize": [(topic, b"0" * 5000)],
        "malformed": [(topic, b""), (topic, b"z" * 80), ("lock//up", good), ("lock/a/b/up", good),
                      up(env, lid, {"v": 1, "t": "ack", "n": "7"}), up(env, lid, {"v": 1, "t": "ack", "n": 8, "rev": "x"}),
                      up(env, lid, {"v": 1, "t": "log", "n": 9, "ev": "nope"}),
                      up(env, lid, {"v": 1, "t": "hello", "n": 10, "fw": 3}),
                      (topic, env.mac(topic.encode(), b"[1,2]").hex().encode() + b"[1,2]")],  # signed, not an object
        "bad_version": [up(env, lid, {"v": 2, "t": "ack", "n": 50, "rev": 1})],
        "unknown_type": [up(env, lid, {"v": 1, "t": "reboot", "n": 51})],
    }
    for reason, msgs in cases.items():
        before = bridge.counts[reason]
        for t, p in msgs:
            bridge.handle(t, p)
        expected = len(msgs) - (1 if reason == "replay" else 0)   # the first copy of `good` is accepted
        assert bridge.counts[reason] - before == expected, (reason, dict(bridge.counts))
    assert bridge.counts["ok_ack"] == 1


def test_counters_out_of_order_are_accepted_once_within_the_window(app, bridge, lock):
    """Two workers may apply one lock's messages slightly out of order: each counter value is accepted exactly
    once, in any order, while it is within 63 of the highest; older ones are refused."""
    lid, env, _ = lock
    order = [100, 98, 99, 97, 100, 98, 150, 120, 120, 87, 86, 151, 149]
    results = [bridge.handle(*up(env, lid, {"v": 1, "t": "ack", "n": n, "rev": 0})) for n in order]
    assert results == [True, True, True, True, False, False, True, True, False, True, False, True, True]
    assert bridge.counts["replay"] == 4
    # far below: outside the window (87 = 150 - 63 is its lowest)
    assert not bridge.handle(*up(env, lid, {"v": 1, "t": "ack", "n": 80, "rev": 0}))
    # a jump of more than the window forgets everything below
    assert bridge.handle(*up(env, lid, {"v": 1, "t": "ack", "n": 1000, "rev": 0}))
    assert not bridge.handle(*up(env, lid, {"v": 1, "t": "ack", "n": 151, "rev": 0}))
    assert bridge.handle(*up(env, lid, {"v": 1, "t": "ack", "n": 999, "rev": 0}))
    assert not bridge.handle(*up(env, lid, {"v": 1, "t": "ack", "n": 999, "rev": 0}))


def test_will_only_for_the_current_session_and_once(app, bridge, lock):
    from cloud.extensions import db
    lid, env, _ = lock
    bridge.handle(*up(env, lid, hello(21, will=20)))
    old_will = up(env, lid, {"v": 1, "t": "will", "n": 11})
    assert not bridge.handle(*old_will) and bridge.counts["stale_will"] == 1
    will = up(env, lid, {"v": 1, "t": "will", "n": 20})
    assert bridge.handle(*will)
    db.session.expire_all()
    assert db.session.get(BridgeLockState, lid).online is False
    assert not bridge.handle(*will)                              # replayed: already consumed
    bridge.handle(*up(env, lid, hello(30, will=29)))
    db.session.expire_all()
    assert db.session.get(BridgeLockState, lid).online is True


def test_codes_ack_log_and_expiry(app, bridge, lock):
    from cloud import domain
    from cloud.extensions import db
    from cloud.models import Code, Lock, LockEvent, User
    from cloud.timeutil import utcnow
    lid, env, agency = lock
    bridge.handle(*up(env, lid, hello(1, will=None)))
    lk = db.session.get(Lock, lid)
    now = utcnow()
    code = domain.generate_code(lk, valid_from=now - timedelta(minutes=5), valid_until=now + timedelta(hours=1),
                                by=db.session.get(User, agency.owner_id))
    bridge.client.sent.clear()
    assert bridge.publish_due() == 1
    (state, _), = downs(bridge, lid, "state")
    dg, cid, vf, vu = struct.unpack(">32sIII", base64.b64decode(state["c"]))
    assert (cid, dg) == (code.id, lk.digest(code.code)) and vu - vf == 3900
    assert bridge.publish_due() == 0                               # nothing new
    assert bridge.handle(*up(env, lid, {"v": 1, "t": "ack", "n": 2, "rev": state["rev"]}))
    db.session.expire_all()
    assert db.session.get(Code, code.id).on_lock_at is not None

    evs = [{"seq": 1, "t": 1790000000, "kind": "opened", "code_id": code.id}, {"seq": 2, "t": None, "kind": "boot",
                                                                               "boot": 4}]
    assert bridge.handle(*up(env, lid, {"v": 1, "t": "log", "n": 3, "ev": evs}))
    assert bridge.handle(*up(env, lid, {"v": 1, "t": "log", "n": 4, "ev": evs}))   # resent: deduplicated
    db.session.commit()
    assert db.session.query(LockEvent).filter_by(lock_id=lid).count() == 2
    assert [m["seq"] for m, _ in downs(bridge, lid, "logack")] == [2, 2]

    # a code's end passes: expire_due (the bridge calls it periodically) bumps the revision, the next poll
    # publishes a state without it
    import time
    short = domain.generate_code(lk, valid_from=now - timedelta(minutes=5), valid_until=utcnow() + timedelta(seconds=2),
                                 by=db.session.get(User, agency.owner_id))
    assert bridge.publish_due() == 1
    while utcnow() < short.valid_until:
        time.sleep(0.1)
    assert lid in domain.expire_due()
    bridge.client.sent.clear()
    assert bridge.publish_due() == 1
    (state2, _), = downs(bridge, lid, "state")
    assert state2["rev"] > state["rev"] + 1 and state2["n"] == 1     # only the hour-long code is left


def test_rotation_request_pushes_the_new_backup(app, bridge, lock):
    from cloud.extensions import db
    from cloud.models import Lock
    lid, env, _ = lock
    bridge.handle(*up(env, lid, hello(1)))
    old = db.session.get(Lock, lid).backup_key
    bridge.client.sent.clear()
    assert bridge.handle(*up(env, lid, {"v": 1, "t": "rotate", "n": 2, "first_used": 1790000000}))
    lk = db.session.get(Lock, lid)
    assert lk.backup_key != old
    assert bridge.publish_due() == 1
    (state, _), = downs(bridge, lid, "state")
    assert base64.b64decode(state["backup"]) == lk.digest(lk.backup_key)
    assert bridge.handle(*up(env, lid, {"v": 1, "t": "rotate", "n": 3, "first_used": 1790000000}))
    assert db.session.get(Lock, lid).backup_key == lk.backup_key    # a repeat is the same rotation


def test_oversized_state_is_not_published(app, bridge):
    from cloud.bridge import encode_state
    too_many = {"revision": 3, "codes": [{"id": i + 1, "digest": b"d" * 32, "from": 1, "until": 2}
                                         for i in range(201)], "backup_digest": b"b" * 32}
    with pytest.raises(ValueError):
        encode_state(too_many)
    full = dict(too_many, codes=too_many["codes"][:200])
    assert len(Envelope(b"k" * 32).seal("lock/24a16054ab3c/down", encode_state(full))) <= B.MAX_DOWN
    json.dumps(encode_state(full))


def test_a_lock_with_too_many_codes_is_not_spun_on(app, bridge, lock):
    from cloud import domain
    from cloud.extensions import db
    from cloud.models import Code, Lock, User
    from cloud.timeutil import utcnow
    lid, env, agency = lock
    bridge.handle(*up(env, lid, hello(1)))
    lk = db.session.get(Lock, lid)
    by = db.session.get(User, agency.owner_id)
    now = utcnow()
    for _ in range(domain.MAX_LIVE_CODES):
        domain.generate_code(lk, valid_from=now, valid_until=now + timedelta(days=2), by=by)
    # the domain refuses a 201st live code; data from before that rule (or a direct write) can still hold one
    lk = db.session.get(Lock, lid)
    db.session.add(Code(lock_id=lid, agency_id=lk.agency_id, code="2468", valid_from=now,
                        valid_until=now + timedelta(days=3), created_by_id=by.id, created_at=now,
                        revision=lk.bump_revision()))
    db.session.commit()
    bridge.client.sent.clear()
    assert bridge.publish_due() == 0
    assert bridge.counts["state_too_large"] == 1 and not downs(bridge, lid, "state")
    assert bridge.publish_due() == 0          # not retried at every poll


def test_a_change_made_while_the_broker_is_waited_for_is_published_next(app, bridge, lock):
    """A code created while the bridge waits for the broker's PUBACK of the previous state (the web commits
    in the meantime): the queue keeps the lock, and the next poll publishes the state with both codes."""
    from tests.conftest import RecordingClient
    from cloud import domain
    from cloud.extensions import db
    from cloud.models import Lock, User
    from cloud.timeutil import utcnow
    lid, env, agency = lock
    bridge.handle(*up(env, lid, hello(1, will=None)))
    bridge.publish_due()
    owner = db.session.get(User, agency.owner_id)
    now = utcnow()

    def new_code():
        return domain.generate_code(db.session.get(Lock, lid), valid_from=now - timedelta(minutes=5),
                                    valid_until=now + timedelta(hours=1), by=owner)

    class ChangedMeanwhile(RecordingClient):
        def publish(self, topic, payload, qos=0, retain=False):
            if not self.sent:
                new_code()  # committed by "the web" after the state was read, before the PUBACK
            return super().publish(topic, payload, qos, retain)

    new_code()
    bridge.client = ChangedMeanwhile()
    assert bridge.publish_due() == 1
    (state, _), = downs(bridge, lid, "state")
    assert state["n"] == 1
    bridge.client = RecordingClient()
    assert bridge.publish_due() == 1                              # still queued: published at the next poll
    (state2, _), = downs(bridge, lid, "state")
    assert state2["rev"] == db.session.get(Lock, lid).desired_revision > state["rev"] and state2["n"] == 2
    assert bridge.publish_due() == 0


def test_a_chunk_of_hellos_and_acks_is_applied_together_and_answered_after_its_commit(app, bridge, make_agency,
                                                                                       make_lock, monkeypatch):
    """The runner's path (handle_batch, then the chunk's commit): several locks' hellos, a repeated hello, an
    ack of a new revision and a replay in one chunk; then a chunk in which one lock's hello makes the domain
    raise: the fast path falls back to one by one and only that message is lost (counted)."""
    from cloud import domain
    from cloud.extensions import db
    from cloud.models import Code, Lock, User
    from cloud.timeutil import utcnow
    agency = make_agency()
    ids = [make_lock(agency, active=i == 0) for i in range(4)]  # codes are made for active locks only
    envs = {lid: Envelope(bytes(db.session.get(Lock, lid).secret)) for lid in ids}
    now = utcnow()
    code = domain.generate_code(db.session.get(Lock, ids[0]), valid_from=now - timedelta(minutes=5),
                                valid_until=now + timedelta(hours=1), by=db.session.get(User, agency.owner_id))
    rev = db.session.get(Lock, ids[0]).desired_revision
    bridge.client.sent.clear()
    chunk = [up(envs[lid], lid, hello(10, will=9, nonce=f"{i:016x}")) for i, lid in enumerate(ids)]
    chunk.append(up(envs[ids[1]], ids[1], hello(11, will=9, nonce=f"{1:016x}")))       # said again
    chunk.append(up(envs[ids[0]], ids[0], {"v": 1, "t": "ack", "n": 12, "rev": rev}))
    chunk.append(chunk[0])                                                               # a replay
    bridge.handle_batch(chunk)
    assert bridge.client.sent == []                                # nothing answered before the commit
    bridge._commit_and_ack([])
    assert bridge.counts["ok_hello"] == 5 and bridge.counts["ok_ack"] == 1 and bridge.counts["replay"] == 1
    for i, lid in enumerate(ids):
        assert [m["nonce"] for m, _ in downs(bridge, lid, "time")] == [f"{i:016x}"]      # one reply per lock
    db.session.expire_all()
    assert all(db.session.get(Lock, lid).status == "active" for lid in ids)
    assert all(db.session.get(BridgeLockState, lid).online for lid in ids)
    assert db.session.get(Lock, ids[0]).acked_revision == rev
    assert db.session.get(Code, code.id).on_lock_at is not None

    real = domain.lock_hello

    def flaky(lock, **kw):
        if lock.id == ids[2]:
            raise RuntimeError("the domain failed for this lock")
        return real(lock, **kw)
    monkeypatch.setattr(domain, "lock_hello", flaky)
    bridge.client.sent.clear()
    bridge.handle_batch([up(envs[lid], lid, hello(20, will=19)) for lid in ids])
    bridge._commit_and_ack([])
    assert bridge.counts["ok_hello"] == 8 and bridge.counts["error"] == 1
    assert [lid for lid in ids if downs(bridge, lid, "time")] == [ids[0], ids[1], ids[3]]
    db.session.expire_all()
    assert [db.session.get(BridgeLockState, lid).will_counter for lid in ids] == [19, 19, 9, 19]


def test_last_contact_moves_with_every_verified_message_not_only_hello(app, bridge, lock, login):
    """Lock.last_seen_at (the lock page's "Last contact") is the time of the last verified uplink: an ack or a
    log later than the hello moves it once the bridge writes what it heard (flush_seen, every second)."""
    import sqlalchemy as sa
    from cloud.extensions import db
    from cloud.models import Lock
    from cloud.timeutil import fmt_local, utcnow
    lid, env, agency = lock
    assert bridge.handle(*up(env, lid, hello(1)))
    bridge.flush_seen()
    long_ago = utcnow() - timedelta(days=3)

    def set_seen(at):
        db.session.execute(sa.update(Lock).where(Lock.id == lid).values(last_seen_at=at))
        db.session.commit()

    def seen():
        db.session.expire_all()
        return db.session.get(Lock, lid).last_seen_at

    client = login(app.test_client(), agency)
    for n, msg in [(2, {"v": 1, "t": "ack", "n": 2, "rev": 0}),
                   (3, {"v": 1, "t": "log", "n": 3, "ev": [{"seq": 1, "t": None, "kind": "boot", "boot": 4}]})]:
        set_seen(long_ago)
        before = utcnow()
        assert bridge.handle(*up(env, lid, msg)), msg["t"]
        assert seen() == long_ago  # buffered: one write a second for all locks
        assert bridge.flush_seen() == 1
        at = seen()
        assert at is not None and at >= before, msg["t"]
        page = client.get(f"/locks/{lid}").data.decode()
        tz = db.session.get(Lock, lid).timezone
        assert fmt_local(at, tz) in page and fmt_local(long_ago, tz) not in page, msg["t"]


def test_a_mac_registered_again_talks_to_running_bridges_with_its_new_secret(app, bridge, make_agency, make_lock):
    """Running bridges cached the first lock's secret and acked revision; the lock is decommissioned and its MAC
    registered again (a new secret, counters and revisions from the start). The worker that publishes the new
    lock's first state seals it with the new secret; another worker, which publishes nothing, checks a failed
    signature against the database once. On both the new lock's uplinks verify and its acks are recorded, and the
    old secret verifies nothing."""
    from cloud import domain
    from cloud.bridge import Bridge
    from cloud.extensions import db
    from cloud.models import Agency, Lock, User
    from tests.conftest import RecordingClient
    other = Bridge(app, host="unused", port=0, username=None, password=None)
    other.client = RecordingClient()
    other.session.connected.set()
    agency = make_agency()
    lid = make_lock(agency, active=False)
    old = Envelope(bytes(db.session.get(Lock, lid).secret))
    assert bridge.handle(*up(old, lid, hello(10)))
    assert bridge.publish_due() == 1
    rev = db.session.get(Lock, lid).desired_revision
    for n, b in ((11, bridge), (12, other)):
        assert b.handle(*up(old, lid, {"v": 1, "t": "ack", "n": n, "rev": rev}))
    assert db.session.get(Lock, lid).acked_revision == rev

    owner = db.session.get(User, agency.owner_id)
    domain.decommission_lock(db.session.get(Lock, lid), by=owner)
    lock = domain.register_lock(db.session.get(Agency, agency.id), mac=lid, name="Flat 3B again",
                                address="12 rue de la Paix", timezone="Europe/Paris", by=owner)
    assert lock.id == lid
    new = Envelope(bytes(lock.secret))

    bridge.client.sent.clear()
    assert bridge.publish_due() == 1
    (state, _), = downs(bridge, lid, "state")                       # opened with the new secret
    assert not bridge.handle(*up(old, lid, hello(13)))              # the old secret verifies nothing any more
    assert bridge.counts["bad_signature"] == 1
    assert bridge.handle(*up(new, lid, hello(1)))                   # the new lock's counters start again
    assert db.session.get(Lock, lid).status == "active"
    assert bridge.handle(*up(new, lid, {"v": 1, "t": "ack", "n": 2, "rev": state["rev"]}))
    assert db.session.get(Lock, lid).acked_revision == state["rev"]

    other.keyring.RECHECK_S = 0.0  # the entry this worker holds is older than the recheck interval
    assert other.handle(*up(new, lid, {"v": 1, "t": "ack", "n": 3, "rev": state["rev"]}))
    assert not other.handle(*up(old, lid, {"v": 1, "t": "ack", "n": 14, "rev": rev}))


def test_bridge_settings_read_yes_and_no_like_every_other_setting(app, monkeypatch):
    """KEYDROP_BRIDGE_SHARED=on (or TRUE) keeps the workers on the shared subscription, as ON means yes for every
    boolean setting (cloud/config.py); 0, no and off take each worker off it."""
    from cloud.bridge import from_config
    from cloud.bridge.session import SHARED_UPLINKS, UPLINKS
    with app.app_context():
        for value, topic in [("on", SHARED_UPLINKS), ("TRUE", SHARED_UPLINKS), (" yes", SHARED_UPLINKS),
                             ("1", SHARED_UPLINKS), ("0", UPLINKS), ("no", UPLINKS), ("off", UPLINKS)]:
            monkeypatch.setenv("KEYDROP_BRIDGE_SHARED", value)
            assert from_config(app).session.topic == topic, value


def _failing(monkeypatch, kind: str, times: int, error):
    """Make uplink type `kind`'s handler raise error() on its first `times` calls, then work; returns the
    list of the uplink counters it was called with."""
    from cloud.bridge import dispatch as D
    real = D.HANDLERS[kind]
    calls = []

    def flaky(b, u):
        calls.append(u.n)
        if len(calls) <= times:
            raise error()
        return real.handler(b, u)

    monkeypatch.setitem(D.HANDLERS, kind, real._replace(handler=flaky))
    return calls


@pytest.mark.parametrize("passing", ["OperationalError", "IntegrityError"])
def test_an_uplink_whose_database_work_fails_for_a_passing_reason_is_applied_again(app, bridge, lock, monkeypatch,
                                                                                  passing):
    """A deadlock between two workers, a busy SQLite (OperationalError), or two workers creating a new lock's
    counter row at once (IntegrityError) fails one uplink's statements: it is applied again, once, with its
    counter, instead of being counted as an error and lost (the broker already has its PUBACK)."""
    import sqlalchemy as sa

    from cloud.extensions import db
    from cloud.models import LockEvent
    lid, env, _ = lock
    assert bridge.handle(*up(env, lid, hello(5)))
    calls = _failing(monkeypatch, "log", 1, lambda: getattr(sa.exc, passing)(
        "UPDATE lock_event", {}, Exception("deadlock detected")))
    evs = [{"seq": 1, "t": 1790000000, "kind": "boot", "boot": 4}]
    assert bridge.handle(*up(env, lid, {"v": 1, "t": "log", "n": 6, "ev": evs}))
    db.session.commit()
    assert calls == [6, 6]
    assert db.session.query(LockEvent).filter_by(lock_id=lid).count() == 1
    assert [m["seq"] for m, _ in downs(bridge, lid, "logack")] == [1]          # answered once
    assert bridge.counts["retried"] == 1 and not bridge.counts.get("error")
    # the same message again is a replay: the retry accepted its counter once
    assert not bridge.handle(*up(env, lid, {"v": 1, "t": "log", "n": 6, "ev": evs}))
    assert bridge.counts["replay"] == 1


def test_a_batched_uplink_is_applied_again_after_its_savepoint_failed(app, bridge, lock, monkeypatch):
    """The same for an ack, which runs in the batch's transaction (a savepoint on PostgreSQL)."""
    import sqlalchemy as sa

    from cloud.extensions import db
    from cloud.models import Lock
    lid, env, _ = lock
    assert bridge.handle(*up(env, lid, hello(5)))
    assert bridge.publish_due() == 1
    rev = db.session.get(Lock, lid).desired_revision
    calls = _failing(monkeypatch, "ack", 1, lambda: sa.exc.OperationalError(
        "UPDATE code", {}, Exception("deadlock detected")))
    assert bridge.handle(*up(env, lid, {"v": 1, "t": "ack", "n": 6, "rev": rev}))
    db.session.commit()
    db.session.expire_all()
    assert calls == [6, 6] and db.session.get(Lock, lid).acked_revision == rev
    assert bridge.counts["retried"] == 1 and not bridge.counts.get("error")


def test_an_uplink_whose_work_keeps_failing_is_held_unacknowledged_and_applied_later(app, bridge, lock, monkeypatch):
    """An access-log upload whose database work fails for a passing reason more often than the retries (two
    workers racing on a constraint, here four IntegrityErrors in a row) is neither counted `error` nor
    acknowledged (the broker still holds it): it is held, and applied once at its next try."""
    import sqlalchemy as sa

    from cloud.extensions import db
    from cloud.models import LockEvent
    lid, env, _ = lock
    assert bridge.handle(*up(env, lid, hello(5)))
    calls = _failing(monkeypatch, "log", 4, lambda: sa.exc.IntegrityError(
        "INSERT lock_event", {}, Exception("duplicate key value")))
    bridge.session.generation = 1
    evs = [{"seq": 1, "t": 1790000000, "kind": "boot", "boot": 4}]
    loop = bridge.loop
    loop._apply([((1, 17), *up(env, lid, {"v": 1, "t": "log", "n": 6, "ev": evs})),
                 ((1, 18), *up(env, lid, {"v": 1, "t": "ack", "n": 7, "rev": 0}))])
    assert calls == [6, 6, 6]
    assert bridge.client.acked == [18]                          # the ack behind it went on, and only it
    assert [r[0] for r in loop.held] == [(1, 17)] and bridge.counts["held"] == 1 and not bridge.counts["error"]
    assert db.session.query(LockEvent).filter_by(lock_id=lid).count() == 0
    assert not downs(bridge, lid, "logack")

    loop._retry_at = 0.0                                        # its next try is due
    loop._apply(loop._next(100))
    assert calls == [6, 6, 6, 6, 6]
    assert bridge.client.acked == [18, 17] and not loop.held and bridge.counts["held"] == 0
    assert db.session.query(LockEvent).filter_by(lock_id=lid).count() == 1
    assert [m["seq"] for m, _ in downs(bridge, lid, "logack")] == [1]  # answered once
    assert bridge.counts["ok_log"] == 1 and not bridge.counts["error"] and not bridge.counts["replay"]
