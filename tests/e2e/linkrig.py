"""A simulated lock (tools/simlock, the firmware on the unix port at 128k) wired to brokers the test controls:
mosquitto with a chosen certificate chain and the lock's login, plus a paho client playing the cloud."""
from __future__ import annotations

import json
import shutil
import ssl
import subprocess
from pathlib import Path

from certs import issue
from e2e_stack import PY, ROOT, SimLock
from tools.mosquitto import Mosquitto, dynsec_client

LOCK_ID = "24a16054ab77"
LOCK_PW = "lock-password-77"
BRIDGE_PW = "bridge-password-77"


def make_lock(tmp: Path, mqtt: dict, ca: Path | None, env: dict, name: str = "lock", world: dict | None = None,
              rtc: bool = False) -> SimLock:
    """A lock whose config.json has this mqtt section (plus login; `ca`: the CA it trusts, copied to its flash);
    `world`: keys for its world.json (e.g. "sntp": False); `rtc`: a DS3231 fitted."""
    d = tmp / name
    r = subprocess.run([PY, str(ROOT / "tools" / "simlock"), "init", str(d), "--lock-id", LOCK_ID]
                       + (["--rtc"] if rtc else []), cwd=str(ROOT), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    if world:
        w = json.loads((d / "world.json").read_text())
        w.update(world)
        (d / "world.json").write_text(json.dumps(w))
    cfg_path = d / "flash" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["mqtt"] = dict({"tls": True, "username": LOCK_ID, "password": LOCK_PW}, **mqtt)
    if ca is not None:
        shutil.copy(ca / "ca.crt", d / "flash" / "ca.crt")
        cfg["mqtt"]["ca"] = "ca.crt"
    cfg_path.write_text(json.dumps(cfg))
    return SimLock(d, env).start()


def broker(tmp: Path, ca: Path, kind: str = "ec", name: str = "mqtt") -> Mosquitto:
    """A mosquitto (not started) with a TLS listener presenting a `kind` chain to `ca`, and the lock's login."""
    srv = issue(ca, tmp / f"{name}-srv", kind=kind)
    shutil.copy(ca / "ca.crt", srv / "ca.crt")
    return Mosquitto(tmp / name, tls=True, tls_dir=srv, bridge_password=BRIDGE_PW,
                     extra_clients=[dynsec_client(LOCK_ID, LOCK_PW, clientid="kd-" + LOCK_ID)])


def cloud_client(b: Mosquitto, ca: Path):
    """A paho client with the bridge's rights (loop started)."""
    import paho.mqtt.client as mqtt
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"t-cloud-{b.tls_port}")
    c.username_pw_set("bridge", BRIDGE_PW)
    c.tls_set_context(ssl.create_default_context(cafile=str(ca / "ca.crt")))
    c.connect("localhost", b.tls_port, 30)
    c.loop_start()
    return c


def state_payload(secret: bytes, n: int, rev: int = 4242) -> bytes:
    """A signed state of n codes "1000".."1000+n-1", valid from a minute ago for a day."""
    import hashlib
    import hmac
    import time
    from cloud.bridge import Envelope, encode_state
    now = int(time.time())
    codes = [{"id": 1000 + i, "digest": hmac.new(secret, b"%04d" % (1000 + i), hashlib.sha256).digest(),
              "from": now - 60, "until": now + 86400 + i} for i in range(n)]
    body = encode_state({"revision": rev, "codes": codes, "backup_digest": None})
    return Envelope(secret).seal(f"lock/{LOCK_ID}/down", body)


def secret_of(lk: SimLock) -> bytes:
    return bytes.fromhex(json.loads((lk.dir / "flash" / "config.json").read_text())["secret"])


def status(lk: SimLock) -> dict:
    lk.cmd("!status")
    return next(e for e in reversed(lk.events) if e.get("event") == "status")
