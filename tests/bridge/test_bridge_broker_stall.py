"""A broker that stops answering (a cluster node dying, a stalled broker: here mosquitto under SIGSTOP) while
codes are created and revoked: the API keeps answering 201/204 (the bridge never holds the database's write
lock while it waits for a PUBACK), and once the broker answers again the lock's retained state is the latest
one. Real mosquitto, the bridge as its own process, the cloud over HTTP on the same SQLite file."""
from __future__ import annotations

import json
import os
import signal
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from e2e_stack import FLASK, Proc, wait_until  # noqa: E402
from tools.mosquitto import MOSQUITTO, Mosquitto, dynsec_client  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
MAC = "24a16054dd01"
BRIDGE_PW = "stall-bridge-password"
OBSERVER = ("stall-observer", "stall-observer-password")


def _iso(t: datetime) -> str:
    return t.isoformat()


def test_the_api_keeps_answering_while_the_broker_stalls(tmp_path):
    if not os.path.exists(MOSQUITTO):
        pytest.skip("mosquitto is not installed (tools/sysdeps test installs it)")
    import paho.mqtt.client as mqtt

    from cloud.bridge import Envelope
    from cloud.extensions import db
    from cloud.models import Lock
    from tests.live_cloud import LiveCloud

    # a busy timeout well under the bridge's PUBACK wait (10 s): a write lock held across that wait shows as 503
    cloud = LiveCloud(tmp_path, SQLITE_BUSY_TIMEOUT=2)
    observer = {"rolename": "observer", "acls": [{"acltype": t, "topic": "lock/#", "allow": True}
                                                 for t in ("publishClientReceive", "subscribePattern")]}
    broker = Mosquitto(tmp_path / "mqtt", bridge_password=BRIDGE_PW, extra_roles=[observer],
                       extra_clients=[dynsec_client(*OBSERVER, roles=["observer"])]).start()
    metrics = tmp_path / "metrics.json"
    env = dict(os.environ, DATABASE_URL=f"sqlite:///{cloud.db_path}", SECRET_KEY="stall", MQTT_HOST="127.0.0.1",
               MQTT_PORT=str(broker.port), MQTT_TLS="0", MQTT_USERNAME="bridge", MQTT_PASSWORD=BRIDGE_PW,
               KEYDROP_BRIDGE_METRICS=str(metrics), KEYDROP_BRIDGE_EXPIRE_EVERY="3600", PYTHONUNBUFFERED="1")
    env.pop("MQTT_ADMIN_PASSWORD", None)  # the test's broker logins are static: the cloud does not manage them
    (tmp_path / "logs").mkdir()
    bridge = Proc("bridge", [FLASK, "--app", "cloud", "bridge"], env, tmp_path / "logs").start()
    watcher = None
    stopped = False

    def counters() -> dict:
        try:
            return json.loads(metrics.read_text() or "{}")
        except (OSError, ValueError):
            return {}

    try:
        wait_until(lambda: counters().get("connects"), 60, "the bridge to connect")
        status, body = cloud.api("POST", "/locks", {"mac": MAC, "name": "Stall flat", "address": "2 Quai, Lyon",
                                                    "timezone": "UTC"})
        assert status == 201, body
        cloud.mark_active(MAC)
        wait_until(lambda: counters().get("states_published"), 30, "the lock's first state")
        with cloud.app.app_context():
            envelope = Envelope(bytes(db.session.get(Lock, MAC).secret))

        os.kill(broker.proc.pid, signal.SIGSTOP)  # the broker accepts bytes and answers nothing
        stopped = True
        now = datetime.now(timezone.utc)
        period = {"valid_from": _iso(now - timedelta(minutes=1)), "valid_until": _iso(now + timedelta(days=1))}
        made = 0
        # create and revoke codes until the bridge has waited a whole PUBACK timeout with its states in flight
        while not counters().get("publish_unconfirmed"):
            status, code = cloud.api("POST", f"/locks/{MAC}/codes", period)
            assert status == 201, code
            status, body = cloud.api("DELETE", f"/codes/{code['id']}")
            assert status in (200, 204), body
            made += 1
            assert made < 2000, "the bridge never gave up on the stalled broker"
        status, last = cloud.api("POST", f"/locks/{MAC}/codes", period)  # the one that stays
        assert status == 201, last
        os.kill(broker.proc.pid, signal.SIGCONT)
        stopped = False

        status, lock = cloud.api("GET", f"/locks/{MAC}")
        want = lock["desired_revision"]
        seen: list[dict] = []
        watcher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="stall-watcher")
        watcher.username_pw_set(*OBSERVER)
        watcher.on_connect = lambda cl, ud, fl, rc, props: cl.subscribe(f"lock/{MAC}/down", qos=1)
        watcher.on_message = lambda cl, ud, msg: seen.append(envelope.open(msg.topic, msg.payload))
        watcher.connect("127.0.0.1", broker.port, 30)
        watcher.loop_start()
        try:
            wait_until(lambda: any(m.get("t") == "state" and m.get("rev") == want for m in seen), 60,
                       f"the retained state of revision {want}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; seen: {[(m.get('t'), m.get('rev')) for m in seen]}") from None
        state = [m for m in seen if m.get("rev") == want][-1]
        assert state["n"] == 1  # every revoked code gone, the last one there
        print(f"broker stalled: {made} codes created and revoked, every request answered; "
              f"revision {want} retained once it answered again")
    finally:
        if stopped:
            os.kill(broker.proc.pid, signal.SIGCONT)
        if watcher is not None:
            watcher.loop_stop()
            watcher.disconnect()
        bridge.stop()
        broker.stop()
        cloud.close()
        if bridge.p is not None and bridge.p.returncode not in (0, -15):
            print(bridge.tail())
