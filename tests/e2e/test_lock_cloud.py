"""Lock ↔ cloud over a real broker, end to end.

One stack per module (mosquitto with TLS + per-lock ACL, web, mailer, bridge, SMTP sink) and one simulated
lock "A" (the firmware on the MicroPython unix port, registered through the API by `tools/simlock init
--cloud`). The tests run in file order and build on each other, like a lock's life: power-up, codes, revoke,
backup rotation, broker outage, replays.
"""
from __future__ import annotations

import json
import re
import socket
import time
from datetime import datetime, timezone

import pytest

from e2e_stack import OBSERVER, run_mp, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MAC_A = "24a16054ab3c"
MAC_B = "24a16054ab3d"
MAC_C = "24a16054ab3e"
CUSTOMER = "guest@customer.example.com"
# the keypad's response bound (real seconds from typing the code to the relay), whatever the network does
KEYPAD_BOUND_S = 2.0


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat()


@pytest.fixture(scope="module")
def recorder(stack):
    """A bridge-credentialed client recording everything on lock A's and B's topics (for replays)."""
    c, got = stack.mqtt_client(*OBSERVER, client_id="e2e-recorder",
                               subscribe=[(f"lock/{MAC_A}/#", 1), (f"lock/{MAC_B}/#", 1)])
    yield got
    c.loop_stop()
    c.disconnect()


@pytest.fixture(scope="module")
def lock_a(stack, recorder):
    lk = stack.new_lock(MAC_A)
    lk.link_event("state", "connected", timeout=90)
    # connected is the lock's side; codes can be made once the cloud has processed its hello (active), and
    # they open once the lock applied the cloud's signed time reply
    wait_until(lambda: stack.api("GET", f"/api/v1/locks/{MAC_A}")[1].get("status") == "active", 30,
               "the cloud to process the lock's hello (active)")
    lk.link_event("time", timeout=30)
    return lk


def make_code(stack, lock_id, start, end, customer=None) -> dict:
    body = {"valid_from": iso(start), "valid_until": iso(end)}
    if customer:
        body.update(customer_email=customer, customer_name="Alex Guest")
    st, code = stack.api("POST", f"/api/v1/locks/{lock_id}/codes", body)
    assert st == 201, code
    return code


def wait_on_lock(stack, code_id, timeout=30.0) -> dict:
    def done():
        st, c = stack.api("GET", f"/api/v1/codes/{code_id}")
        return c if c.get("on_lock_at") else None
    return wait_until(done, timeout, f"code {code_id} acknowledged on the lock")


def events_of(stack, lock_id) -> list:
    from cloud.models import LockEvent
    import sqlalchemy as sa
    with stack.db() as s:
        return [(e.seq, e.kind, e.code_id) for e in s.scalars(
            sa.select(LockEvent).where(LockEvent.lock_id == lock_id).order_by(LockEvent.seq))]


def backup_key(stack, lock_id) -> str:
    from cloud.models import Lock
    with stack.db() as s:
        return s.get(Lock, lock_id).backup_key


# ---------------------------------------------------------------- power-up


def test_power_up_makes_the_lock_active_and_emails_the_owner(stack, lock_a):
    lock_a.link_event("time", timeout=30)                      # the cloud's signed reply gave trusted time
    lock_a.link_event("codeset", timeout=30)                   # the desired state was installed
    st, body = stack.api("GET", f"/api/v1/locks/{MAC_A}")
    assert st == 200 and body["status"] == "active"
    assert body["firmware_version"] and body["last_seen_at"]
    wait_until(lambda: stack.api("GET", f"/api/v1/locks/{MAC_A}")[1]["acked_revision"] >= 1, 20, "first ack")
    mail = stack.wait_mail(stack.owner_email, "is online")[0]
    assert backup_key(stack, MAC_A) in stack.smtp.text(mail)   # the owner gets the backup key
    assert online(stack, MAC_A) is True


def online(stack, lock_id):
    from cloud.bridge import BridgeLockState
    with stack.db() as s:
        row = s.get(BridgeLockState, lock_id)
        return None if row is None else row.online


def test_wifi_lost_and_back(stack, lock_a):
    """`!net down`: the lock drops its connection, the broker publishes its signed will, the cloud marks it
    offline; the keypad doesn't care; `!net up`: back online with a new hello (which now carries its time)."""
    now = time.time()
    code = make_code(stack, MAC_A, now - 60, now + 10 * 86400)
    wait_on_lock(stack, code["id"])
    m = lock_a.mark()
    lock_a.cmd("!net down")
    lock_a.link_event("state", "offline", since=m, timeout=30)
    wait_until(lambda: online(stack, MAC_A) is False, 20, "the cloud to mark the lock offline (last will)")
    assert lock_a.enter(code["code"])[0] == "open"
    m = lock_a.mark()
    lock_a.cmd("!net up")
    lock_a.link_event("state", "connected", since=m, timeout=60)
    wait_until(lambda: online(stack, MAC_A) is True, 20, "online again")
    from cloud.models import Lock
    with stack.db() as s:
        lk = s.get(Lock, MAC_A)
        assert lk.clock_skew_s is not None and abs(lk.clock_skew_s) < 600  # the hello carried the lock's time


def test_power_cycle_continues_the_counter(stack, lock_a):
    """After a reboot the hello continues the persisted counter (no replay drop) and the synced codes are
    still there (the code set is on the lock's flash)."""
    now = time.time()
    code = make_code(stack, MAC_A, now - 60, now + 10 * 86400)
    wait_on_lock(stack, code["id"])
    base = stack.metrics()
    m = lock_a.mark()
    lock_a.send("!power-cycle")
    lock_a.wait(lambda e: e.get("event") == "ready", 60, m, "the reboot")
    lock_a.link_event("state", "connected", since=m, timeout=60)
    stack.wait_metric("ok_hello", base.get("ok_hello", 0) + 1)
    assert stack.metrics().get("replay", 0) == base.get("replay", 0)
    # the reboot lost the lock's trusted time: a code opens once the reply to this session's hello is applied
    assert lock_a.link_event("time", since=m, timeout=30)["ok"] is True
    assert lock_a.enter(code["code"])[0] == "open"


# ---------------------------------------------------------------- codes


def test_code_reaches_the_lock_and_opens_only_inside_its_window(stack, lock_a):
    now = time.time()
    code = make_code(stack, MAC_A, now + 120, now + 3600, customer=CUSTOMER)
    acked = wait_on_lock(stack, code["id"])
    assert acked["on_lock"] == "on the lock"
    assert lock_a.enter(code["code"])[0] == "refused"          # before its window
    lock_a.cmd("!advance 180")
    assert lock_a.enter(code["code"])[0] == "open"             # inside

    short = make_code(stack, MAC_A, now - 60, now + 400)
    wait_on_lock(stack, short["id"])
    assert lock_a.enter(short["code"])[0] == "open"
    lock_a.cmd("!advance 300")                                  # the lock's clock passes its end
    assert lock_a.enter(short["code"])[0] == "refused"         # after

    # mails: the customer got the code, the owner too
    cust = stack.wait_mail(CUSTOMER, "Your door code")[0]
    assert code["code"] in stack.smtp.text(cust)
    stack.wait_mail(stack.owner_email, f"Code {code['code']}")
    stack.wait_mail(stack.owner_email, f"Code {short['code']}")


def test_revoked_code_is_refused(stack, lock_a):
    now = time.time()
    code = make_code(stack, MAC_A, now - 60, now + 2 * 86400)
    wait_on_lock(stack, code["id"])
    assert lock_a.enter(code["code"])[0] == "open"
    m = lock_a.mark()
    rev_before = stack.api("GET", f"/api/v1/locks/{MAC_A}")[1]["desired_revision"]
    st, body = stack.api("DELETE", f"/api/v1/codes/{code['id']}")
    assert st == 200 and body["revoked_at"]
    lock_a.wait(lambda e: e.get("event") == "link" and e.get("codeset", 0) > rev_before, 30, m, "revocation")
    assert lock_a.enter(code["code"])[0] == "refused"


def test_access_log_becomes_history(stack, lock_a):
    wait_until(lambda: any(k == "opened" for _, k, _ in events_of(stack, MAC_A)), 30, "opened events in history")
    seqs = [s for s, _, _ in events_of(stack, MAC_A)]
    assert len(seqs) == len(set(seqs))


# ---------------------------------------------------------------- backup key


def test_backup_key_rotation(stack, lock_a):
    old = backup_key(stack, MAC_A)
    assert lock_a.enter(old)[0] == "open"                      # first use starts the 24 h
    m = lock_a.mark()
    rev_before = stack.api("GET", f"/api/v1/locks/{MAC_A}")[1]["desired_revision"]
    assert lock_a.enter(old)[0] == "open"                      # still the key until replaced
    lock_a.cmd("!advance 86460", timeout=120)                  # 24 h (and a minute) later
    lock_a.link_event("rotate", "requested", since=m, timeout=30)
    lock_a.wait(lambda e: e.get("event") == "link" and e.get("codeset", 0) > rev_before, 30, m, "new backup")
    new = backup_key(stack, MAC_A)
    assert new != old
    mail = stack.wait_mail(stack.owner_email, "New backup key")[0]
    text = stack.smtp.text(mail)
    assert new in text and old not in text.split(new)[0][-10:]
    assert lock_a.enter(new)[0] == "open"
    assert lock_a.enter(old)[0] == "refused"


def rotations_of(stack, lock_id) -> list:
    from cloud.models import BackupKeyRotation
    import sqlalchemy as sa
    with stack.db() as s:
        return [(r.old_key, r.new_key, r.installed_at) for r in s.scalars(
            sa.select(BackupKeyRotation).where(BackupKeyRotation.lock_id == lock_id).order_by(BackupKeyRotation.id))]


def rotation_mails_queued(stack) -> list:
    from cloud.models import OutboxMail
    import sqlalchemy as sa
    with stack.db() as s:
        return [r.status for r in s.scalars(sa.select(OutboxMail).where(
            OutboxMail.kind == "backup_rotated", OutboxMail.recipient == stack.owner_email))]


def lock_status(lock) -> dict:
    m = lock.mark()
    lock.cmd("!status")
    return lock.wait(lambda e: e.get("event") == "status", 10, m, "status")


def uplinks(recorder, since: int, t: str) -> list:
    """Bodies of lock A's uplinks of type `t` recorded since index `since` (payload = 64 hex sig + JSON)."""
    out = []
    for topic, payload, _ in recorder[since:]:
        if topic == f"lock/{MAC_A}/up":
            try:
                body = json.loads(payload[64:])
            except ValueError:
                continue
            if isinstance(body, dict) and body.get("t") == t:
                out.append(body)
    return out


def test_backup_key_rotation_due_while_offline(stack, lock_a, recorder):
    """The rotation falls due while the lock has no network: the old key keeps opening and nothing changes in
    the cloud; back online, the lock asks right after its hello, the cloud rotates once, the new key is
    installed and opens, the old one is refused, the owner gets one email."""
    old = backup_key(stack, MAC_A)
    rots = rotations_of(stack, MAC_A)
    mails = len(stack.mails(stack.owner_email, "New backup key"))
    queued = len(rotation_mails_queued(stack))
    wait_until(lambda: lock_status(lock_a)["trusted_now"] is not None, 30, "trusted time from the cloud")
    assert lock_a.enter(old)[0] == "open"                      # first use, with trusted time (online)
    st = lock_status(lock_a)
    first_used = st["backup_first_used"]
    assert first_used is not None and st["rotation_due"] is False

    m = lock_a.mark()
    r = len(recorder)
    wills = stack.metrics().get("ok_will", 0)
    lock_a.cmd("!net down")
    lock_a.link_event("state", "offline", since=m, timeout=30)
    wait_until(lambda: online(stack, MAC_A) is False, 20, "the cloud to mark the lock offline (last will)")
    # the bridge's counters are as of the last will: whatever the lock sent before it went offline is in
    wait_until(lambda: stack.metrics().get("ok_will", 0) > wills, 10, "the last will in the bridge's counters")
    rev_before = stack.api("GET", f"/api/v1/locks/{MAC_A}")[1]["desired_revision"]
    ok_rotate = stack.metrics().get("ok_rotate", 0)

    lock_a.cmd("!advance 86460", timeout=120)                  # 24 h (and a minute) later, still offline
    lock_a.wait(lambda e: e.get("event") == "log" and e.get("kind") == "rotation_due", 10, m, "rotation due")
    assert lock_status(lock_a)["rotation_due"] is True
    assert lock_a.enter(old)[0] == "open"                      # the old key opens until the new one is installed
    assert not any(e.get("event") == "link" and "rotate" in e for e in lock_a.events[m:])
    assert backup_key(stack, MAC_A) == old                     # no new key in the cloud yet
    assert rotations_of(stack, MAC_A) == rots
    assert stack.api("GET", f"/api/v1/locks/{MAC_A}")[1]["desired_revision"] == rev_before
    assert stack.metrics().get("ok_rotate", 0) == ok_rotate
    assert len(stack.mails(stack.owner_email, "New backup key")) == mails
    assert uplinks(recorder, r, "rotate") == []

    m = lock_a.mark()
    r = len(recorder)
    lock_a.cmd("!net up")                                      # the link reconnects (its backoff: 1 s .. 60 s)
    conn = lock_a.link_event("state", "connected", since=m, timeout=90)
    req = lock_a.link_event("rotate", "requested", since=m, timeout=30)
    assert req["_t"] - conn["_t"] < 10                         # at once, not after the first 30 s interval
    lock_a.wait(lambda e: e.get("event") == "link" and e.get("codeset", 0) > rev_before, 30, m, "new backup")
    new = backup_key(stack, MAC_A)
    assert new != old
    assert lock_status(lock_a)["rotation_due"] is False
    # on the wire: the request follows the new session's hello
    hello = wait_until(lambda: uplinks(recorder, r, "hello"), 20, "the hello recorded")[0]
    wait_until(lambda: any(x["n"] > hello["n"] for x in uplinks(recorder, r, "rotate")), 20, "rotate recorded")
    assert all(x["first_used"] == first_used for x in uplinks(recorder, r, "rotate"))
    assert lock_a.enter(new)[0] == "open"
    assert lock_a.enter(old)[0] == "refused"

    got = stack.wait_mail(stack.owner_email, "New backup key", count=mails + 1)   # sent on the lock's ack
    after = rotations_of(stack, MAC_A)
    assert after[:len(rots)] == rots and len(after) == len(rots) + 1                # one rotation
    assert after[-1][:2] == (old, new) and after[-1][2] is not None                 # acknowledged
    assert new in stack.smtp.text(got[-1])
    wait_until(lambda: rotation_mails_queued(stack)[queued:] == ["sent"], 30, "the rotation mail sent")
    assert len(stack.mails(stack.owner_email, "New backup key")) == mails + 1   # exactly one


# ---------------------------------------------------------------- the broker goes away


def test_broker_down_unreachable_restarting_keypad_and_log(stack, lock_a):
    now = time.time()
    code = make_code(stack, MAC_A, now - 60, now + 5 * 86400)
    wait_on_lock(stack, code["id"])
    outcome, base = lock_a.enter(code["code"])
    assert outcome == "open"
    timings = {"up": base}

    # 1. broker stopped
    m = lock_a.mark()
    stack.broker.stop()
    lock_a.link_event("state", "offline", since=m, timeout=60)
    outcome, timings["down"] = lock_a.enter(code["code"])
    assert outcome == "open"

    # 2. unreachable: something accepts TCP connections on the broker's port but never answers
    hole = socket.socket()
    hole.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    hole.bind(("127.0.0.1", stack.broker.tls_port))
    hole.listen(16)
    try:
        # wait until the link's next attempt is stuck in our backlog (TCP accepted by the kernel, TLS
        # handshake never answered): then type codes while it hangs
        import select
        assert select.select([hole], [], [], 90)[0], "the lock did not try to reconnect"
        outcome, timings["hanging"] = lock_a.enter(code["code"])
        assert outcome == "open"
        outcome, timings["hanging2"] = lock_a.enter(code["code"])
        assert outcome == "open"
    finally:
        hole.close()

    # 3. restarting
    m = lock_a.mark()
    stack.broker.start()
    outcome, timings["restarting"] = lock_a.enter(code["code"])
    assert outcome == "open"
    lock_a.link_event("state", "connected", since=m, timeout=90)
    print("keypad outcome times (s):", json.dumps({k: round(v, 3) for k, v in timings.items()}))
    assert max(timings.values()) < KEYPAD_BOUND_S, timings

    # events made while offline arrive exactly once
    def delivered():
        n = sum(1 for _, k, c in events_of(stack, MAC_A) if k == "opened" and c == code["id"])
        return n if n >= 5 else None
    assert wait_until(delivered, 60, "offline events delivered") == 5    # 1 before + 4 while offline
    seqs = [s for s, _, _ in events_of(stack, MAC_A)]
    assert len(seqs) == len(set(seqs))
    assert stack.api("GET", f"/api/v1/codes/{code['id']}")[1]["on_lock"] == "on the lock"
    # the synced code still opens after all that
    assert lock_a.enter(code["code"])[0] == "open"


# ---------------------------------------------------------------- replays and tampering


def test_replayed_and_tampered_messages_are_refused(stack, lock_a, recorder):
    c, _ = stack.mqtt_client(*OBSERVER)
    try:
        # uplink: a log message the lock sent, replayed as is, and tampered
        ups = [p for t, p, _ in recorder if t == f"lock/{MAC_A}/up" and b'"log"' in p]
        assert ups, "no uplink log message recorded"
        base = stack.metrics()
        c.publish(f"lock/{MAC_A}/up", ups[-1], qos=1)
        stack.wait_metric("replay", base.get("replay", 0) + 1)
        bad = bytearray(ups[-1])
        bad[-3] ^= 0x01
        c.publish(f"lock/{MAC_A}/up", bytes(bad), qos=1)
        stack.wait_metric("bad_signature", base.get("bad_signature", 0) + 1)

        # downlink: an old desired state, a tampered one, an old time reply
        downs = [p for t, p, _ in recorder if t == f"lock/{MAC_A}/down"]
        states = [p for p in downs if b'"state"' in p]
        times = [p for p in downs if b'"time"' in p]
        assert len(states) >= 2 and times
        m = lock_a.mark()
        c.publish(f"lock/{MAC_A}/down", states[0], qos=1)
        lock_a.link_event("refused", "stale_revision", since=m, timeout=20)
        bad = bytearray(states[-1])
        bad[70] ^= 0x01
        m = lock_a.mark()
        c.publish(f"lock/{MAC_A}/down", bytes(bad), qos=1)
        lock_a.link_event("refused", "bad_signature", since=m, timeout=20)
        m = lock_a.mark()
        c.publish(f"lock/{MAC_A}/down", times[0], qos=1)
        lock_a.link_event("refused", "stale_time", since=m, timeout=20)
    finally:
        c.loop_stop()
        c.disconnect()
    # the lock still works and still talks to the cloud
    now = time.time()
    code = make_code(stack, MAC_A, now - 60, now + 5 * 86400)
    wait_on_lock(stack, code["id"])


def test_bridge_drops_bad_input_and_keeps_going(stack, lock_a):
    c, _ = stack.mqtt_client(*OBSERVER)
    base = stack.metrics()
    try:
        c.publish("lock/ffffffffffff/up", b"0" * 64 + b'{"v":1,"t":"hello","n":1}', qos=1)
        c.publish(f"lock/{MAC_A}/up", b"x" * 5000, qos=1)
        c.publish(f"lock/{MAC_A}/up", b"", qos=1)
        c.publish(f"lock/{MAC_A}/up", b"not even close", qos=1)
        c.publish(f"lock/{MAC_A}/up", b"z" * 64 + b"{not json", qos=1)
    finally:
        c.loop_stop()
        c.disconnect()
    stack.wait_metric("unknown_lock", base.get("unknown_lock", 0) + 1)
    stack.wait_metric("oversize", base.get("oversize", 0) + 1)
    stack.wait_metric("malformed", base.get("malformed", 0) + 3)
    assert stack.bridge.p.poll() is None
    n = len(events_of(stack, MAC_A))
    assert lock_a.enter("0000")[0] in ("refused", "locked_out")
    wait_until(lambda: len(events_of(stack, MAC_A)) > n, 30, "events still flowing")


def test_lockout_is_reported_to_the_owner(stack, lock_a):
    outcomes = [lock_a.enter("0000")[0] for _ in range(6)]
    assert "locked_out" in outcomes
    stack.wait_mail(stack.owner_email, "keypad locked out", timeout=30)
    wait_until(lambda: any(k == "lockout" for _, k, _ in events_of(stack, MAC_A)), 30, "lockout in history")


# ---------------------------------------------------------------- broker hardening


def test_a_lock_can_only_touch_its_own_topics(stack, lock_a, recorder):
    """Lock B's login (B itself is not running, so its client id is free) against lock A's topics."""
    lock_b = stack.new_lock(MAC_B, start=False)
    cfg_b = json.loads((lock_b.dir / "flash" / "config.json").read_text())["mqtt"]

    c, got = stack.mqtt_client(cfg_b["username"], cfg_b["password"], client_id=f"kd-{MAC_B}")
    br, _ = stack.mqtt_client(*OBSERVER)
    try:
        # reading: B may subscribe to A's topics (mosquitto 2.0 grants the SUBACK) but receives nothing there
        c.subscribe([(f"lock/{MAC_A}/down", 1), (f"lock/{MAC_A}/up", 1), (f"lock/{MAC_B}/down", 1)])
        wait_until(lambda: any(t == f"lock/{MAC_B}/down" for t, _, _ in got), 10, "B's own retained state")
        br.publish(f"lock/{MAC_A}/down", b"for A only", qos=1).wait_for_publish(5)
        br.publish(f"lock/{MAC_A}/up", b"A's uplink", qos=1).wait_for_publish(5)
        br.publish(f"lock/{MAC_B}/down", b"control for B", qos=1).wait_for_publish(5)
        wait_until(lambda: any(p == b"control for B" for _, p, _ in got), 10, "the control message")
        assert not any(t.startswith(f"lock/{MAC_A}/") for t, _, _ in got)
        # writing: B's publish on A's uplink is dropped by the broker; on its own uplink it goes through
        n = len(recorder)
        c.publish(f"lock/{MAC_A}/up", b"from B", qos=1).wait_for_publish(5)
        c.publish(f"lock/{MAC_B}/down", b"B writes its downlink", qos=1).wait_for_publish(5)
        c.publish(f"lock/{MAC_B}/up", b"control", qos=1).wait_for_publish(5)
        wait_until(lambda: any(p == b"control" for _, p, _ in recorder[n:]), 10, "the control message")
        assert not any(p in (b"from B", b"B writes its downlink") for _, p, _ in recorder[n:])
    finally:
        for x in (c, br):
            x.loop_stop()
            x.disconnect()
    # a wrong password is refused, and so is the right one with any client id but the lock's own
    assert connack(stack, MAC_B, "0" * 32, f"kd-{MAC_B}").is_failure
    assert connack(stack, MAC_B, cfg_b["password"], "some-other-id").is_failure
    assert not connack(stack, MAC_B, cfg_b["password"], f"kd-{MAC_B}").is_failure
    lock_b.stop()


def connack(stack, username: str, password: str, client_id: str):
    """Connect once over TLS and return the broker's CONNACK reason code."""
    import paho.mqtt.client as mqtt
    import ssl
    rc = []
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    c.username_pw_set(username, password)
    c.tls_set_context(ssl.create_default_context(cafile=stack.ca))
    c.on_connect = lambda cl, ud, fl, reason, props: rc.append(reason)
    c.connect("localhost", stack.broker.tls_port, 10)
    c.loop_start()
    try:
        return wait_until(lambda: rc, 10, "CONNACK")[0]
    finally:
        c.loop_stop()
        c.disconnect()


def test_a_login_cannot_take_over_another_session(stack, lock_a):
    """Lock A's login with lock C's client id (20 tries) and with the bridge's: refused before any session is
    touched, so C and the bridge keep theirs (no disconnect, no last will, no republishing)."""
    lock_c = stack.new_lock(MAC_C)
    lock_c.link_event("state", "connected", timeout=90)
    cfg_a = json.loads((lock_a.dir / "flash" / "config.json").read_text())["mqtt"]
    bridge_id = re.search(r"bridge connected to \S+ as (\S+),", stack.bridge.tail(400)).group(1)
    assert len(bridge_id) >= len("keydrop-bridge-") + 16  # 64 random bits: not guessable
    m, base = lock_c.mark(), stack.metrics()
    refused = sum(connack(stack, cfg_a["username"], cfg_a["password"], f"kd-{MAC_C}").is_failure for _ in range(20))
    refused += sum(connack(stack, cfg_a["username"], cfg_a["password"], bridge_id).is_failure for _ in range(5))
    assert refused == 25
    # C's session was kept: it still answers through the cloud, and never saw its link drop
    now = time.time()
    code = make_code(stack, MAC_C, now - 60, now + 86400)
    wait_on_lock(stack, code["id"])
    assert not [e for e in lock_c.events[m:] if e.get("event") == "link" and e.get("state", "connected") != "connected"]
    assert stack.metrics().get("connects") == base.get("connects")  # the bridge did not reconnect
    assert stack.metrics().get("ok_will", 0) == base.get("ok_will", 0)
    lock_c.stop()


def test_a_registered_lock_logs_in_at_once_and_a_revoked_one_not_at_all(stack):
    """Registration gives the broker login before the API answers; revoke() (decommissioning) removes it and
    ends the live session; reconcile() re-creates a login the broker lost."""
    from cloud import broker_credentials
    mac = "24a16054ab3f"
    status, body = stack.api("POST", "/api/v1/locks", {"mac": mac, "name": "Flat 3F", "address": "3 rue des Tests",
                                                       "timezone": "Europe/Paris"})
    assert status == 201, body
    creds = stack.api("POST", f"/api/v1/locks/{mac}/provision", {})[1]["mqtt"]
    t0 = time.monotonic()
    assert not connack(stack, mac, creds["password"], f"kd-{mac}").is_failure  # the first try
    print(f"register → first connect: {(time.monotonic() - t0) * 1000:.0f} ms")
    config = {k: v for k, v in stack.env.items() if k.startswith("MQTT_")}
    live, _ = stack.mqtt_client(mac, creds["password"], client_id=f"kd-{mac}")
    wait_until(live.is_connected, 10, "the lock's session")
    gone = []
    live.on_disconnect = lambda *a: gone.append(a)
    live.reconnect_delay_set(30, 60)  # keep it down once the broker ended it
    with stack.db():
        assert broker_credentials.revoke(mac, config)
    wait_until(lambda: gone, 10, "the broker to end the revoked lock's session")
    live.loop_stop()
    assert connack(stack, mac, creds["password"], f"kd-{mac}").is_failure
    with stack.db():
        assert broker_credentials.reconcile(config)["created"] == 1
    assert not connack(stack, mac, creds["password"], f"kd-{mac}").is_failure


def test_tls_needs_the_right_ca(stack, tmp_path):
    import ssl
    from tools.localca import make_ca
    other = make_ca(tmp_path / "other", name="Some other CA")
    for cafile in (None, str(other / "ca.crt")):
        ctx = ssl.create_default_context(cafile=cafile)
        with socket.create_connection(("127.0.0.1", stack.broker.tls_port), timeout=10) as raw:
            with pytest.raises(ssl.SSLCertVerificationError):
                ctx.wrap_socket(raw, server_hostname="localhost")
    # and the lock's own client (MicroPython, mbedTLS) refuses a broker its CA did not sign
    out = run_mp(f"""
import ssl, socket
from mqtt import MQTTClient
def der(p):
    from binascii import a2b_base64
    return a2b_base64(b"".join(l for l in p.split(b"\\n") if l and not l.startswith(b"-----")))
for ca in ({str(other / 'ca.crt')!r}, {stack.ca!r}):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=der(open(ca, 'rb').read()))
    c = MQTTClient('ca-test', 'localhost', {stack.broker.tls_port}, 'nobody', 'x', 30, ctx)
    try:
        c.connect(True, 10)
        print('connected')
    except Exception as e:
        print('refused', type(e).__name__)
""")
    lines = out.strip().splitlines()
    assert lines[0].startswith("refused")           # wrong CA: the TLS handshake fails
    assert lines[1] == "refused MQTTException"      # right CA: TLS passes, then the broker refuses the login


def settled_status(stack, lock) -> dict:
    """The lock's status once its link is idle: the cloud holds its access log up to the last record, and two
    readings a second apart agree. Right after an opening (or a reboot) the log's upload and the replies to the
    hello are still in flight, and a QoS 1 message is held until its PUBACK: up to 2.7 KB seen in one reading
    that the next reading no longer had (that is traffic, not what the lock keeps)."""
    def status() -> dict:
        m = lock.mark()
        lock.cmd("!status")
        return lock.wait(lambda e: e.get("event") == "status", 10, m, "status")
    last = status()["last_seq"]
    wait_until(lambda: any(seq >= last for seq, _, _ in events_of(stack, lock.lock_id)), 30, "the log uploaded")
    prev = status()
    for _ in range(10):
        time.sleep(1.0)
        cur = status()
        if abs(cur["heap_free"] - prev["heap_free"]) <= 64:
            return cur
        prev = cur
    raise AssertionError(f"lock {lock.lock_id}: heap still moving after 10 readings ({prev['heap_free']})")


def test_a_full_lock_of_200_codes_over_the_air(stack):
    """Lock B (firmware at the default 128k heap cap, TLS) receives a 200-code desired state (~15 KB)."""
    from cloud import domain
    from cloud.extensions import db
    from cloud.models import Lock, User
    import sqlalchemy as sa
    lock_b = next(lk for lk in stack.locks if lk.lock_id == MAC_B)
    lock_b.start()
    lock_b.link_event("codeset", timeout=60)
    wait_until(lambda: stack.api("GET", f"/api/v1/locks/{MAC_B}")[1]["status"] == "active", 30, "B active")
    now = time.time()
    with stack.db() as s:
        lock = s.get(Lock, MAC_B)
        owner = s.scalar(sa.select(User).where(User.email == stack.owner_email))
        codes = []
        start = datetime.fromtimestamp(now - 60, timezone.utc)
        for i in range(200):
            c = domain.generate_code(lock, valid_from=start,
                                     valid_until=datetime.fromtimestamp(now + 86400 + i, timezone.utc), by=owner)
            codes.append(c.code)
        db.session.commit()
    ev = lock_b.wait(lambda e: e.get("event") == "link" and e.get("codes") == 200, 60, 0, "200 codes installed")
    assert ev["codeset"] >= 201
    assert lock_b.enter(codes[-1])[0] == "open"
    assert lock_b.enter(codes[0])[0] == "open"
    st = settled_status(stack, lock_b)
    print("lock B with 200 codes: heap used", st["heap_used"], "free", st["heap_free"])
    # a reboot with the full set on flash: the records loaded at boot move into the link's home for them, so
    # the lock has as much heap as before (the file's 8.8 KB buffer used to stay held until a new revision)
    m = lock_b.mark()
    lock_b.cmd("!power-cycle")
    lock_b.wait(lambda e: e.get("event") == "ready", 60, m, "B up again")
    lock_b.link_event("state", "connected", since=m, timeout=90)
    lock_b.wait(lambda e: e.get("event") == "link" and e.get("ok") and "time" in e, 30, m, "B's trusted time")
    assert lock_b.enter(codes[1])[0] == "open"
    again = settled_status(stack, lock_b)
    print("lock B after a reboot with 200 codes: heap free", again["heap_free"])
    # the regression this guards against held 8.8 KB; a settled reading after a reboot has been seen up to 1.9 KB
    # under the one before it (12,480 -> 10,624: the collector scans the C stack conservatively, and a stale word
    # there can keep a buffer of the boot alive), so 4 KB of slack
    assert again["codes"] == 200 and again["heap_free"] >= st["heap_free"] - 4096, (st["heap_free"], again["heap_free"])
