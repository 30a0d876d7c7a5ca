"""Two bridge workers publishing desired states from one change queue (cloud/bridge/publisher.py), on SQLite and,
when TEST_POSTGRES_URL is set, PostgreSQL. The race is made to happen, not hoped for: while worker A waits for
the broker's PUBACKs of the states it took, worker B (its own thread, session and database connection) runs its
own publishing turn and answers hellos of locks that have not had their first state yet. Whatever the order,
every lock gets its current state, and from one worker only."""
from __future__ import annotations

import threading

import pytest

import cloud.bridge as B  # noqa: F401  (registers bridge_lock_state before the app fixture creates tables)
from cloud.bridge import Envelope
from tests.conftest import RecordingClient


def _worker(app):
    from cloud.bridge import Bridge
    b = Bridge(app, host="unused", port=0, username=None, password=None)
    b.client = RecordingClient()
    b.session.connected.set()
    return b


def _hello(lid: str, secret: bytes) -> tuple[str, bytes]:
    topic = f"lock/{lid}/up"
    return topic, Envelope(secret).seal(topic, {"v": 1, "t": "hello", "n": 1, "will": None, "fw": "0.1.0",
                                                "boot": 1, "time": None, "rev": 0, "nonce": "00112233aabbccdd"})


def _states(app, *workers) -> dict[str, list[int]]:
    """lock id -> the revisions of the `state` messages the workers sent it, in order, all workers together."""
    from cloud.extensions import db
    from cloud.models import Lock
    out: dict[str, list[int]] = {}
    for w in workers:
        for topic, payload, _retain in w.client.sent:
            lid = topic.split("/")[1]
            env = Envelope(bytes(db.session.get(Lock, lid).secret))
            msg = env.open(topic, payload)
            if msg["t"] == "state":
                out.setdefault(lid, []).append(msg["rev"])
    return out


@pytest.mark.parametrize("first, waiting", [(4, 4), (40, 25)])
def test_a_worker_waiting_for_the_broker_loses_no_state_another_worker_queued(app, make_agency, make_lock, first,
                                                                              waiting):
    from cloud.extensions import db
    from cloud.models import Lock

    with app.app_context():
        a = _worker(app)
        agency = make_agency()
        # locks registered and published once, not online yet: their hellos (rev 0) will ask for their state
        late = [make_lock(agency, active=False) for _ in range(waiting)]
        while a.publish_due():
            pass
        secrets_ = {lid: bytes(db.session.get(Lock, lid).secret) for lid in late}
        db.session.rollback()
        # locks whose first states are queued: worker A takes them
        early = [make_lock(agency, active=False) for _ in range(first)]
        a.client = RecordingClient()

    b_done = threading.Event()
    errors: list[BaseException] = []

    def worker_b():
        try:
            with app.app_context():
                b.publish_due()  # B's turn while A waits for the broker
                for lid in late:  # the late locks come online through B
                    assert b.handle(*_hello(lid, secrets_[lid]))
        except BaseException as exc:  # noqa: BLE001 (reported in the main thread)
            errors.append(exc)
        finally:
            b_done.set()

    class SlowBroker(RecordingClient):
        """A's broker: before the first PUBACK, worker B has done all of the above."""

        def publish(self, topic, payload, qos=0, retain=False):
            if not b_done.is_set() and not self.sent:
                t = threading.Thread(target=worker_b)
                t.start()
                t.join(60)
            return super().publish(topic, payload, qos, retain)

    with app.app_context():
        b = _worker(app)
        a.client = SlowBroker()
        a.publish_due()
        assert b_done.is_set() and not errors, errors
        # both workers go on publishing until the queue is empty (B with its own session, as in its own process)
        for _ in range(20):
            with app.app_context():
                nb = b.publish_due()
            if a.publish_due() + nb == 0:
                break
        sent = _states(app, a, b)
        desired = {lid: db.session.get(Lock, lid).desired_revision for lid in early + late}
        missing = sorted(lid for lid in desired if desired[lid] not in sent.get(lid, []))
        assert not missing, f"{len(missing)} locks never got their current state: {missing[:5]}"
        twice = {lid: revs for lid, revs in sent.items() if len(revs) != len(set(revs))}
        assert not twice, f"states published twice (by both workers): {list(twice.items())[:5]}"


class _NeverConfirmed(RecordingClient):
    """A broker that takes the publications and never sends their PUBACK."""

    def publish(self, topic, payload, qos=0, retain=False):
        super().publish(topic, payload, qos, retain)
        return self

    def wait_for_publish(self, timeout=None):
        pass

    def is_published(self):
        return False


class _Died(BaseException):
    """The worker's process ends in the middle of its turn (SIGKILL: nothing of the turn runs to its end)."""


def _queued_locks(app, make_agency, make_lock, n: int) -> list[str]:
    with app.app_context():
        agency = make_agency()
        return [make_lock(agency, active=False) for _ in range(n)]


def _got_current_state(app, lids, *workers) -> list[str]:
    """The locks among `lids` that have not been sent their current state."""
    from cloud.extensions import db
    from cloud.models import Lock
    sent = _states(app, *workers)
    return [lid for lid in lids if db.session.get(Lock, lid).desired_revision not in sent.get(lid, [])]


def test_a_turn_the_broker_did_not_confirm_leaves_its_locks_to_the_other_worker_at_once(app, make_agency,
                                                                                       make_lock):
    lids = _queued_locks(app, make_agency, make_lock, 5)
    with app.app_context():
        a, b = _worker(app), _worker(app)
        a.client, a.publisher.ack_timeout = _NeverConfirmed(), 0.0
        assert a.publish_due() == 0 and a.counts["publish_unconfirmed"] == 1
        assert b.publish_due() == 5                      # not left waiting for A's claim to lapse
        assert not _got_current_state(app, lids, b)
        assert a.publish_due() == b.publish_due() == 0


def test_a_worker_dying_in_its_turn_leaves_its_locks_to_the_other_worker(app, make_agency, make_lock, monkeypatch):
    from cloud.bridge import publisher
    from cloud.extensions import db
    from tests.waiting import wait_until
    monkeypatch.setattr(publisher, "CLAIM_MARGIN", 0.5)
    lids = _queued_locks(app, make_agency, make_lock, 5)

    class Dies(RecordingClient):
        def publish(self, topic, payload, qos=0, retain=False):
            raise _Died()

    with app.app_context():
        a, b = _worker(app), _worker(app)
        a.client, a.publisher.ack_timeout = Dies(), 0.1
        with pytest.raises(_Died):
            a.publish_due()
        db.session.rollback()  # its connection closes
        wait_until(b.publish_due, 30, "the other worker publishing the dead worker's locks")
        assert not _got_current_state(app, lids, b)
