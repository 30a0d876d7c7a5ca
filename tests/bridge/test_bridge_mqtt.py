"""The bridge's MQTT client (cloud/bridge/mqttclient.py): reads in blocks and a chunk's PUBACKs in one write, on a
real mosquitto over TCP and TLS. What a user of the bridge would notice if it were wrong: an uplink lost or
garbled, one acknowledged that was not applied (the broker would not send it again), one applied twice."""
from __future__ import annotations

import os
import socket

import pytest

from cloud.bridge import mqttclient
from tools.mosquitto import BRIDGE_USER, MOSQUITTO, Mosquitto, dynsec_client

LOCKS = [(f"b0c00000f{i:03x}", f"lock-password-{i}") for i in range(4)]


def test_the_installed_paho_has_the_seams_the_fast_client_uses():
    # if an upgrade of paho moves them, the bridge falls back to paho's plain client (4× the CPU per uplink in
    # tools/bench/bridge_mqtt.py): this says so
    assert mqttclient.fast()


def test_read_ahead_serves_small_reads_from_one_block_and_passes_eof_and_would_block_through():
    a, b = socket.socketpair()
    try:
        a.setblocking(False)
        r = mqttclient.ReadAhead(a)
        with pytest.raises(BlockingIOError):
            r.recv(1)
        b.sendall(b"\x30\x05hello\x40\x02\x00\x07")
        assert r.recv(1) == b"\x30" and r.buffered() == 10 and r.pending() == 10
        assert r.recv(1) == b"\x05" and r.recv(5) == b"hello"
        assert r.recv(100) == b"\x40\x02\x00\x07"  # a short read at the block's end, nothing read past it
        assert r.buffered() == 0
        with pytest.raises(BlockingIOError):
            r.recv(1)
        b.sendall(b"x" * 70_000)  # more than a block: served in two, nothing lost
        got = b""
        while len(got) < 70_000:
            got += r.recv(70_000 - len(got))
        assert got == b"x" * 70_000
        b.close()
        assert r.recv(1) == b""  # EOF, as from the socket itself
    finally:
        a.close()


@pytest.fixture
def broker(tmp_path):
    if not os.path.exists(MOSQUITTO):
        pytest.skip("mosquitto is not installed (tools/sysdeps test installs it)")
    b = Mosquitto(tmp_path / "mqtt", tls=True,
                  extra_clients=[dynsec_client(lid, pw, clientid=f"kd-{lid}") for lid, pw in LOCKS]).start()
    yield b
    b.stop()


def _publish_all(broker, per_lock: int) -> set[bytes]:
    """Each lock publishes per_lock distinct QoS 1 messages of different lengths; returns the payloads."""
    import paho.mqtt.client as mqtt
    sent = set()
    for lid, pw in LOCKS:
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"kd-{lid}", protocol=mqtt.MQTTv311)
        c.username_pw_set(lid, pw)
        c.connect("127.0.0.1", broker.port)
        c.loop_start()
        infos = []
        for i in range(per_lock):
            payload = f"{lid}:{i}:".encode() + b"p" * (i % 300)
            sent.add(payload)
            infos.append(c.publish(f"lock/{lid}/up", payload, qos=1))
        for info in infos:
            info.wait_for_publish(10)
            assert info.is_published()
        c.loop_stop()
        c.disconnect()
    return sent


def _session(broker, tls: bool, client_id: str):
    from cloud.bridge.metrics import Metrics
    from cloud.bridge.session import Session
    s = Session(Metrics(None), host="localhost" if tls else "127.0.0.1", port=broker.tls_port if tls else broker.port,
                username=BRIDGE_USER, password=broker.bridge_password, client_id=client_id,
                tls_ca=str(broker.tls_dir / "ca.crt") if tls else None, persistent=True)
    s.start()
    assert s.connected.wait(10)
    return s


def _take(session, n: int, timeout: float = 10.0) -> list:
    import queue
    out = []
    while len(out) < n:
        try:
            rec = session.inbox.get(timeout=timeout)
        except queue.Empty:
            break
        if rec[1] is not None:
            out.append(rec)
    return out


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
def test_every_uplink_arrives_whole_and_only_the_unacknowledged_ones_come_again(broker, tls):
    session = _session(broker, tls, "bench-bridge-slot")
    assert isinstance(session.client, mqttclient.Client)
    try:
        sent = _publish_all(broker, 300)
        got, kept = [], []
        while len(got) < len(sent):  # as the bridge takes them: a chunk at a time, acknowledged (here: half of it)
            chunk = _take(session, min(100, len(sent) - len(got)))
            assert chunk, f"{len(sent) - len(got)} uplinks never arrived"
            got += chunk
            session.ack([r[0] for r in chunk[::2]])  # one write for the chunk's acknowledgements
            kept += chunk[1::2]
        assert sorted(r[2] for r in got) == sorted(sent)  # each once, byte for byte
        ping = session.client.publish(f"lock/{LOCKS[0][0]}/down", b"after the acks", qos=1)
        ping.wait_for_publish(10)  # the acks were written before this went out
    finally:
        session.stop()
    # the same persistent session again: the broker sends what was not acknowledged, and only that
    session = _session(broker, tls, "bench-bridge-slot")
    try:
        again = _take(session, len(kept), timeout=5)
        assert sorted(r[2] for r in again) == sorted(r[2] for r in kept)
        assert _take(session, 1, timeout=1) == []
        session.ack([r[0] for r in again])
    finally:
        session.stop()

