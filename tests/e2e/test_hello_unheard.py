"""A lock that powers up while no bridge is subscribed: its hello is dropped by the broker (no subscriber, clean
sessions), so the lock says it again (bounded, jittered) until the cloud's `time` reply answers it. The cloud
learns of the power-up once a bridge is back, without the lock reconnecting."""
from __future__ import annotations

import pytest

from e2e_stack import FLASK, Stack, mosquitto_available, wait_until

pytestmark = [pytest.mark.e2e]
MAC = "24a1605413a1"


@pytest.mark.skipif(not mosquitto_available(), reason="mosquitto is not installed")
def test_a_hello_sent_while_no_bridge_listens_is_repeated_until_answered(tmp_path):
    from cloud.models import Lock
    with Stack(tmp_path).running() as s:
        s.bridge.stop()  # the cloud's only bridge is away when the lock powers up
        lk = s.new_lock(MAC, start=False)
        lock_id = lk.lock_id
        lk.start()
        mark = lk.link_event("state", "connected", timeout=60)
        with s.db() as db:
            assert db.get(Lock, lock_id).status == "registered"  # nobody heard the hello

        s.metrics_file.unlink()  # the new bridge process counts from zero
        s.bridge = s._proc("bridge", [FLASK, "--app", "cloud", "bridge"])
        s.wait_metric("connects", 1, timeout=30)

        # the lock never reconnected: the same session's hello, said again, reaches the new bridge
        lk.link_event("time", timeout=90)

        def active():
            with s.db() as db:
                return db.get(Lock, lock_id).status == "active"
        wait_until(active, 30, "the lock to be active in the cloud")
        assert [e for e in lk.events if e.get("event") == "link" and e.get("state") == "connected"] == [mark]
        s.wait_mail(s.owner_email, "is online")
