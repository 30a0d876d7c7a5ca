"""The firmware and the bridge on a clustered broker they were not written for: a 3-node NATS cluster (MQTT over
JetStream). Six simulated locks (the firmware on the unix port) spread over the nodes, each configured with all
three addresses (mqtt.hosts, its own node first); one bridge on node 0. A node with locks on it is killed with
SIGKILL while codes are being created: its locks fail over to the surviving nodes and every code reaches its lock
and opens. Nothing in the product is NATS-specific: only MQTT 3.1.1, QoS 1 and retained messages."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from e2e_stack import FLASK, PY, Proc, SimLock, wait_until  # noqa: E402
from tools.natscluster import NATS, NatsCluster  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
LOCKS = 6
KILLED = 2  # the node that dies
BRIDGE_PW = "cluster-bridge-password"


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat()


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    from tests.live_cloud import LiveCloud
    c = LiveCloud(tmp_path_factory.mktemp("cloud"))
    yield c
    c.close()


def test_codes_reach_every_lock_when_a_broker_node_dies(cloud, tmp_path):
    if not os.path.exists(NATS):
        pytest.skip("nats-server is not installed (tools/sysdeps test installs it)")
    dirs, users = [], {"bridge": BRIDGE_PW}
    for i in range(LOCKS):
        d = tmp_path / f"lock{i}"
        r = subprocess.run([PY, str(ROOT / "tools" / "simlock"), "init", str(d), "--cloud", cloud.url,
                            "--token", cloud.token, "--mac", f"24a1605c00{i:02x}", "--timezone", "UTC"],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        dirs.append(d)
    nats = NatsCluster(tmp_path / "nats", users)  # its ports now; the users are read when it starts
    for i, d in enumerate(dirs):
        path = d / "flash" / "config.json"
        cfg = json.loads(path.read_text())
        users[cfg["mqtt"]["username"]] = cfg["mqtt"]["password"]
        order = [(i + k) % 3 for k in range(3)]  # 2 locks start on each node, the others are their fallbacks
        # mqtt.hosts wins over mqtt.host (device/session.py); host stays as provisioning writes it
        cfg["mqtt"].update(tls=False, host="127.0.0.1", hosts=[f"127.0.0.1:{nats.mqtt_ports[n]}" for n in order])
        cfg["mqtt"].pop("ca", None)
        path.write_text(json.dumps(cfg))
    nats.start()
    nats.wait_ready("bridge", BRIDGE_PW)  # so each lock's first address is where it stays
    env = dict(os.environ, DATABASE_URL=str(cloud.app.config["SQLALCHEMY_DATABASE_URI"]), SECRET_KEY="cluster", MQTT_HOST="127.0.0.1", MQTT_PORT=str(nats.mqtt_ports[0]), MQTT_TLS="0",
               MQTT_USERNAME="bridge", MQTT_PASSWORD=BRIDGE_PW, KEYDROP_BRIDGE_SHARED="0",
               KEYDROP_BRIDGE_METRICS=str(tmp_path / "metrics.json"), KEYDROP_BRIDGE_EXPIRE_EVERY="3600",
               PYTHONUNBUFFERED="1")
    env.pop("MQTT_ADMIN_PASSWORD", None)  # NATS logins are its static users: the cloud does not manage them
    (tmp_path / "logs").mkdir()
    bridge = Proc("bridge", [FLASK, "--app", "cloud", "bridge"], env, tmp_path / "logs").start()
    wait_until(lambda: (tmp_path / "metrics.json").exists() and json.loads(
        (tmp_path / "metrics.json").read_text() or "{}").get("connects"), 60, "the bridge to subscribe")
    locks = [SimLock(d, dict(os.environ)).start() for d in dirs]
    try:
        for lk in locks:
            lk.link_event("state", "connected", timeout=90)
            wait_until(lambda: cloud.api("GET", f"/locks/{lk.lock_id}")[1].get("status") == "active", 60,
                       f"{lk.lock_id}'s hello through the cluster")

        def code_round() -> list[dict]:
            now = time.time()
            out = []
            for lk in locks:
                status, body = cloud.api("POST", f"/locks/{lk.lock_id}/codes",
                                         {"valid_from": _iso(now - 60), "valid_until": _iso(now + 86400)})
                assert status == 201, body
                out.append(body)
            return out

        def on_locks(n: int, timeout: float) -> None:
            for lk in locks:
                lk.wait(lambda e: e.get("event") == "link" and (e.get("codes") or 0) >= n, timeout,
                        what=f"{n} codes on {lk.lock_id}")

        code_round()
        on_locks(1, 60)
        marks = [lk.mark() for lk in locks]
        code_round()
        t_kill = time.monotonic()
        nats.kill(KILLED)  # mid-run: the second round's codes are in flight
        last = code_round()
        on_locks(3, 90)
        settled = time.monotonic() - t_kill
        moved = [lk for i, lk in enumerate(locks) if i % 3 == KILLED]
        for lk, m in zip(locks, marks):
            if lk in moved:  # its node died: it connected again, to a surviving node
                lk.wait(lambda e: e.get("event") == "link" and e.get("state") == "connected", 30, m,
                        "a reconnection after the node died")
        for lk, code in zip(locks, last):
            assert lk.enter(code["code"])[0] == "open"
        print(f"NATS 3-node cluster, node {KILLED} killed with {len(moved)} of {LOCKS} locks on it: "
              f"{3 * LOCKS} of {3 * LOCKS} codes reached their lock, all on the lock {settled:.1f} s after the kill")
    finally:
        for lk in locks:
            lk.stop()
        bridge.stop()
        nats.stop()
        if bridge.p is not None and bridge.p.returncode not in (0, -15):
            print(bridge.tail())
