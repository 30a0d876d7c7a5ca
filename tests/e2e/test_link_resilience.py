"""The link under attack and under broker failure, on the simulated lock (unix port, 128k) with real mosquitto
brokers: a flood of 1,000 forged downlinks leaves it connected, opening codes, with one access-log record per
drop reason; a lock configured with several brokers (mqtt.hosts) fails over between them."""
from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

import pytest

from certs import make_ca
from e2e_stack import wait_until
from linkrig import LOCK_ID, broker, cloud_client, make_lock, secret_of, state_payload, status
from tools.mosquitto import free_port

pytestmark = [pytest.mark.e2e]
DOWN = f"lock/{LOCK_ID}/down"


def _files(flash: Path) -> dict:
    """name -> inode: store.save() replaces a file by renaming a new one over it, so a write changes it."""
    return {p.name: p.stat().st_ino for p in flash.iterdir() if p.is_file()}


def _forged(i: int, secret: bytes) -> bytes:
    kind = i % 3
    if kind == 0:  # a small message under a made-up signature
        return secrets.token_hex(32).encode() + b'{"v":1,"t":"time","now":1,"nonce":"x"}'
    if kind == 1:  # a full-size state, re-signed by someone without the secret: verified over 11.9 KB
        good = state_payload(secret, 200, rev=10_000 + i)
        return secrets.token_hex(32).encode() + good[64:]
    return b"0" * 64 + b" " * 14000  # bigger than the lock takes: dropped unread by its client


def test_a_flood_of_forged_downlinks(tmp_path, env):
    ca = make_ca(tmp_path / "ca", "Flood CA")
    b = broker(tmp_path, ca).start()
    c = None
    lk = make_lock(tmp_path, {"host": "localhost", "port": b.tls_port}, ca, env)
    try:
        lk.link_event("state", "connected", timeout=60)
        secret = secret_of(lk)
        c = cloud_client(b, ca)
        c.publish(DOWN, state_payload(secret, 3, rev=7), qos=1, retain=True).wait_for_publish(10)
        lk.link_event("codeset", 7, timeout=30)
        lk.cmd("!time")
        before = status(lk)
        files = _files(lk.dir / "flash")
        mark = lk.mark()
        t0 = time.monotonic()
        for i in range(1000):
            c.publish(DOWN, _forged(i, secret), qos=1)
        # the lock has worked through them all when a last, genuine message comes through
        c.publish(DOWN, state_payload(secret, 4, rev=8), qos=1, retain=True)
        lk.wait(lambda e: e.get("event") == "link" and e.get("codeset") == 8, 240, mark, "the state after the flood")
        took = time.monotonic() - t0
        after = status(lk)
        link = [e for e in lk.events[mark:] if e.get("event") == "link"]
        refused = [e["refused"] for e in link if "refused" in e]
        assert not [e for e in link if "state" in e or "error" in e], link  # never offline, never reconnected
        assert set(refused) <= {"bad_signature", "oversize"} and len(refused) > 0, set(refused)
        assert lk.enter("1003")[0] == "open"
        new = lk.events[mark:]
        records = [e for e in new if e.get("event") == "log" and e["kind"] == "codeset_refused"]
        assert len(records) <= 2, records  # one per reason per 10 minutes
        assert not [e for e in new if e.get("event") in ("crash", "ready")]
        changed = sorted(n for n, ino in _files(lk.dir / "flash").items() if files.get(n) != ino)
        log_writes = after["last_seq"] - before["last_seq"]
        print(f"flood: 1000 forged downlinks in {took:.1f} s; {len(refused)} refusals reached the main loop "
              f"({sorted(set(refused))}); access-log records {log_writes} (each one 16-byte append), of which "
              f"codeset_refused {len(records)}; files rewritten: {changed}; heap free {after['heap_free']}")
        assert set(changed) <= {"log0.bin", "log1.bin", "codes.bin", "codes.bin.bak", "link.bin", "link.bin.bak",
                                "state.json", "state.json.bak"}, changed
    finally:
        if c is not None:
            c.loop_stop()
            c.disconnect()
        lk.stop()
        b.stop()


def test_a_lock_that_only_sends_stays_connected(tmp_path, env):
    """A broker whose only traffic to the lock is acks of what the lock sends (here: its log uploads, resent
    every 10 s since no cloud answers them) is alive: those acks count for the keepalive. The lock used to
    count only messages and poll wake-ups, missed the acks publish() reads while it waits, sent no ping since
    it was sending anyway, and after 45 s called a live broker dead and reconnected."""
    ca = make_ca(tmp_path / "ca", "Quiet CA")
    b = broker(tmp_path, ca).start()
    lk = make_lock(tmp_path, {"host": "localhost", "port": b.tls_port}, ca, env)
    try:
        lk.link_event("state", "connected", timeout=60)
        mark = lk.mark()
        assert lk.enter("9999")[0] in ("refused", "open")  # either way an access-log record the lock uploads (and uploads again)
        time.sleep(60)
        link = [e for e in lk.events[mark:] if e.get("event") == "link"]
        assert not [e for e in link if "state" in e or "error" in e], link
    finally:
        lk.stop()
        b.stop()


def _is_hello(payload: bytes) -> bool:
    try:
        return json.loads(payload[64:]).get("t") == "hello"
    except ValueError:
        return False


def test_failover_between_brokers(tmp_path, env):
    ca = make_ca(tmp_path / "ca", "Cluster CA")
    a = broker(tmp_path, ca, name="node-a").start()
    bb = broker(tmp_path, ca, name="node-b").start()
    dead = free_port()  # nothing listens there: the first of the list
    clients = []
    hellos = {"a": [], "b": []}
    for name, node in (("a", a), ("b", bb)):
        cl = cloud_client(node, ca)
        cl.on_message = lambda _c, _u, msg, name=name: hellos[name].append(msg.payload) if _is_hello(msg.payload) else None
        cl.subscribe(f"lock/{LOCK_ID}/up", 1)
        clients.append(cl)
    time.sleep(0.5)  # the subscriptions are in place before the lock says hello
    hosts = [f"localhost:{dead}", f"localhost:{a.tls_port}", f"localhost:{bb.tls_port}"]
    lk = make_lock(tmp_path, {"hosts": hosts, "port": 1}, ca, env)
    try:
        lk.link_event("state", "connected", timeout=60)
        wait_until(lambda: hellos["a"], 30, "the hello on node a (after the dead first address)")
        assert not hellos["b"]
        mark = lk.mark()
        a.stop()
        lk.link_event("state", "offline", since=mark, timeout=60)
        lk.link_event("state", "connected", since=mark, timeout=90)
        wait_until(lambda: hellos["b"], 30, "the hello on node b")
    finally:
        for cl in clients:
            cl.loop_stop()
            cl.disconnect()
        lk.stop()
        a.stop()
        bb.stop()
