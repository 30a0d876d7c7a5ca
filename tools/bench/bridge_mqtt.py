"""What the bridge's MQTT session costs per uplink, with paho's plain client and with the bridge's
(cloud/bridge/mqttclient.py: reads in blocks, a chunk's PUBACKs in one write), on a real mosquitto (dynamic
security, as in production), plain TCP and TLS.

A publisher process (20 lock logins, QoS 1, 160-byte messages) sends KEYDROP_MQTT_N messages (default 100,000) as
fast as the broker takes them; this process runs the bridge's Session and takes them as the bridge's main loop
does (up to 1,000 at a time from the inbox, then acknowledges them), nothing else. Figures: this process's CPU
time per message (both threads: paho's network thread and the taker) and messages per second, from the first
message to the last. Every message sent must arrive: anything missing is reported and fails the run.
Prints one JSON line per client and transport: {"bench":"bridge_mqtt","client":…,"tls":…,"msgs":…,"lost":…,
"cpu_us_per_msg":…,"msgs_per_s":…}.
"""
from __future__ import annotations

import asyncio
import json
import os
import queue
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

LOCKS = 20
PAYLOAD = 160
TAKE = 1000  # uplinks taken from the inbox at a time (loop.py's CHUNK)


async def _publish(port: int, creds: list[tuple[str, str]], per_lock: int) -> None:
    """Each lock publishes per_lock QoS 1 messages and waits for all its PUBACKs before closing (a close with
    unread data resets the connection, and the broker would drop what it had not read yet)."""
    import struct
    from tools.fleetsim import _s, _vlen

    async def one(lid: str, pw: str) -> None:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        body = (b"\x00\x04MQTT\x04\xc2" + struct.pack("!H", 60) + _s(f"kd-{lid}") + _s(lid) + _s(pw))
        w.write(b"\x10" + _vlen(len(body)) + body)
        ack = await r.readexactly(4)
        if ack[3] != 0:
            raise RuntimeError(f"CONNACK {ack[3]} for {lid}")
        topic, payload = _s(f"lock/{lid}/up"), b"x" * PAYLOAD

        async def pubacks() -> None:
            left = 4 * per_lock  # PUBACK: 4 bytes
            while left > 0:
                data = await r.read(65536)
                if not data:
                    raise RuntimeError(f"the broker closed {lid}'s connection")
                left -= len(data)
        reader = asyncio.create_task(pubacks())
        for i in range(per_lock):
            var = topic + struct.pack("!H", i % 65535 + 1)
            w.write(b"\x32" + _vlen(len(var) + len(payload)) + var + payload)
            if i % 100 == 0:
                await w.drain()
        await w.drain()
        await asyncio.wait_for(reader, 300)
        w.write(b"\xe0\x00")  # DISCONNECT
        await w.drain()
        w.close()
    await asyncio.gather(*(one(lid, pw) for lid, pw in creds))


def _take(session, total: int, timeout: float = 30.0) -> tuple[int, float, float]:
    """Take and acknowledge until `total` arrived or nothing came for `timeout` s: (count, wall s, CPU s)."""
    got, t0, c0 = 0, None, None
    inbox = session.inbox
    while got < total:
        try:
            batch = [inbox.get(timeout=timeout)]
        except queue.Empty:
            break
        try:
            while len(batch) < TAKE:
                batch.append(inbox.get_nowait())
        except queue.Empty:
            pass
        recs = [r for r in batch if r[1] is not None]
        if recs and t0 is None:
            t0, c0 = time.perf_counter(), time.process_time()
        got += len(recs)
        session.ack([r[0] for r in recs if r[0] is not None])
    if t0 is None:
        return got, 0.0, 0.0
    return got, time.perf_counter() - t0, time.process_time() - c0


def measure(plain_paho: bool, tls: bool, n: int) -> dict:
    from cloud.bridge import mqttclient
    from cloud.bridge.metrics import Metrics
    from cloud.bridge.session import Session
    from tools.mosquitto import BRIDGE_USER, Mosquitto, dynsec_client
    tmp = Path(tempfile.mkdtemp(prefix="kd-mqtt-bench-"))
    creds = [(f"b0c0000000{i:02x}", secrets.token_hex(12)) for i in range(LOCKS)]
    # the locks publish on the plain listener, the bridge reads from the TLS one when measuring TLS
    broker = Mosquitto(tmp / "broker", tls=tls, extra_clients=[dynsec_client(lid, pw, clientid=f"kd-{lid}")
                                                               for lid, pw in creds])
    broker.start()
    fast = mqttclient.fast
    session = pub = None
    try:
        if plain_paho:
            mqttclient.fast = lambda: False
        session = Session(Metrics(None), host="localhost" if tls else "127.0.0.1",
                          port=broker.tls_port if tls else broker.port, username=BRIDGE_USER,
                          password=broker.bridge_password, client_id=f"bench-{secrets.token_hex(4)}",
                          tls_ca=str(broker.tls_dir / "ca.crt") if tls else None)
        session.start()
        if not session.connected.wait(10):
            raise RuntimeError("the bench's session did not connect")
        while not session.inbox.empty():
            session.inbox.get_nowait()
        per_lock = n // LOCKS
        pub = subprocess.Popen([sys.executable, "-m", "tools.bench.bridge_mqtt", "--publish", str(broker.port),
                                str(per_lock), json.dumps(creds)], cwd=ROOT)
        got, wall, cpu = _take(session, per_lock * LOCKS)
        sent = per_lock * LOCKS
        return {"bench": "bridge_mqtt", "client": "paho" if plain_paho else "bridge", "tls": tls, "msgs": sent,
                "lost": sent - got, "cpu_us_per_msg": round(cpu / max(got, 1) * 1e6, 1),
                "msgs_per_s": round(got / wall) if wall else 0}
    finally:
        mqttclient.fast = fast
        if session is not None:
            session.stop()
        if pub is not None:
            try:
                pub.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pub.kill()
        broker.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    from tools import mosquitto
    if not mosquitto.installed():
        print("bridge_mqtt: mosquitto is not installed; skipped")
        return 0
    import logging
    logging.disable(logging.WARNING)
    n = int(os.environ.get("KEYDROP_MQTT_N", "100000"))
    failed = 0
    for tls in (False, True):
        for plain_paho in (True, False):
            r = measure(plain_paho, tls, n)
            print(f"  {'TLS' if tls else 'TCP'}, {'paho Client' if plain_paho else 'bridge client (mqttclient)'}: "
                  f"{r['msgs'] - r['lost']}/{r['msgs']} uplinks taken and acknowledged, {r['lost']} lost; "
                  f"{r['cpu_us_per_msg']:.1f} µs CPU per message, {r['msgs_per_s']} msgs/s", flush=True)
            print(json.dumps(r), flush=True)
            failed |= bool(r["lost"])
    if failed:
        print("bridge_mqtt: FAILED: messages lost")
    return 1 if failed else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--publish"]:
        asyncio.run(_publish(int(sys.argv[2]), [tuple(c) for c in json.loads(sys.argv[4])], int(sys.argv[3])))
        sys.exit(0)
    sys.exit(main())
