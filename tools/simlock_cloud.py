"""`tools/simlock init DIR --cloud URL --token TOKEN --mac MAC`: a simulated lock registered through the API.

Registers the MAC with the agency of TOKEN (POST /api/v1/locks; a 409 naming the same lock id means the
agency already has it: that registration is taken), fetches its credentials (POST /api/v1/locks/<id>/provision)
and writes the lock's flash: config.json with the secret, the backup digest and the mqtt section (plus the
broker's CA certificate when --ca is given), and the world file. Prints the lock id. Owned by the link
(issue #4); tools/simlock calls init_from_cloud().
"""
from __future__ import annotations

import json
import shutil
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path


def _call(url: str, token: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else b""
    req = urllib.request.Request(url, data=data, method="POST", headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        try:
            return e.code, json.loads(e.read() or b"{}")
        except ValueError:
            return e.code, {}


def canonical_mac(mac: str) -> str:
    m = "".join(c for c in mac.lower() if c in "0123456789abcdef")
    if len(m) != 12 or len(mac.replace(":", "").replace("-", "").replace(".", "")) != 12:
        raise ValueError(f"malformed MAC {mac!r}: 12 hex digits")
    return m


def init_from_cloud(a) -> int:
    d = Path(a.dir)
    if (d / "flash" / "config.json").exists():
        print(f"simlock: {d} already holds a lock (remove it first)", file=sys.stderr)
        return 2
    try:
        mac = canonical_mac(a.mac or "")
    except ValueError as e:
        print(f"simlock: {e}", file=sys.stderr)
        return 2
    base = a.cloud.rstrip("/")
    status, body = _call(f"{base}/api/v1/locks", a.token, {
        "mac": mac, "name": a.name or f"Simulated lock {mac[-4:]}",
        "address": a.address or "1 Simulation Street", "timezone": a.timezone or "UTC"})
    if status == 201:
        lock_id = body["id"]
    elif status == 409 and body.get("lock_id"):
        lock_id = body["lock_id"]  # this agency already registered it: take that registration
    else:
        print(f"simlock: registering {mac} failed ({status}): {body.get('message', body)}", file=sys.stderr)
        return 1
    status, prov = _call(f"{base}/api/v1/locks/{lock_id}/provision", a.token, {})
    if status != 200:
        print(f"simlock: provisioning {lock_id} failed ({status}): {prov.get('message', prov)}", file=sys.stderr)
        return 1
    flash = d / "flash"
    flash.mkdir(parents=True, exist_ok=True)
    mqtt = dict(prov["mqtt"])
    if a.ca:
        shutil.copyfile(a.ca, flash / "ca.crt")
        mqtt["ca"] = "ca.crt"
    cfg = {
        "lock_id": prov["lock_id"],
        "secret": prov["secret"],
        "relay_ms": 5000,
        "code_length": 4,
        "relay_active_high": True,
        "backup_digest": prov["backup_digest"],
        "wifi": {"ssid": "simulated", "password": ""},
        "mqtt": mqtt,
    }
    tmp = flash / "config.json.tmp"
    tmp.write_text(json.dumps(cfg, indent=1))
    tmp.replace(flash / "config.json")
    epoch = a.epoch if a.epoch is not None else int(time.time())
    world = {"epoch_ms": epoch * 1000, "rtc": bool(a.rtc), "rtc_offset": 0, "rtc_osf": False}
    (d / "world.json").write_text(json.dumps(world))
    print(prov["lock_id"])
    return 0


def add_arguments(parser) -> None:
    parser.add_argument("--cloud", help="register through this cloud's API (URL) instead of a local secret")
    parser.add_argument("--token", help="the agency's API token (with --cloud)")
    parser.add_argument("--mac", help="the lock's MAC (with --cloud); it becomes the lock id")
    parser.add_argument("--name", help="lock name (with --cloud)")
    parser.add_argument("--address", help="property address (with --cloud)")
    parser.add_argument("--timezone", help="IANA time zone (with --cloud, default UTC)")
    parser.add_argument("--ca", help="the broker's CA certificate, copied to the lock (TLS)")
