"""`tools/simlock init DIR --cloud URL --token TOKEN --mac MAC`: a simulated lock registered through the API.

Registers the MAC with the agency of TOKEN (POST /api/v1/locks; a 409 naming the same lock id means the
agency already has it: that registration is taken), fetches its credentials (POST /api/v1/locks/<id>/provision)
and writes the lock's flash: config.json with the secret, the backup digest and the mqtt section (plus the
broker's CA certificate when --ca is given), and the world file. Prints the lock id. tools/simlock calls
init_from_cloud(); tools/devstack calls write_credentials() to refresh a lock it already has.
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

from cloud.models import InvalidMac, canonical_mac
from cloud.timeutil import DEFAULT_TIMEZONE
from tools.cloudclient import ApiClient, CloudError, api_url

# What a freshly made simulated lock has besides the cloud's credentials.
SIM_DEFAULTS = {"relay_ms": 5000, "code_length": 4, "relay_active_high": True,
                "wifi": {"ssid": "simulated", "password": ""}}


def write_credentials(flash: Path, api: ApiClient, lock_id: str, ca: str | None = None,
                      cloud_url: str | None = None) -> dict:
    """Fetch the lock's credentials and write them into flash/config.json (atomically), keeping every other
    setting already there; returns the cloud's provisioning reply."""
    prov = api.request("POST", f"/locks/{lock_id}/provision", {})
    path = flash / "config.json"
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError):
        cfg = dict(SIM_DEFAULTS)
    flash.mkdir(parents=True, exist_ok=True)
    mqtt = dict(prov["mqtt"])
    if ca:
        shutil.copyfile(ca, flash / "ca.crt")
        mqtt["ca"] = "ca.crt"
    elif isinstance(cfg.get("mqtt"), dict) and cfg["mqtt"].get("ca"):
        mqtt["ca"] = cfg["mqtt"]["ca"]
    cfg.update({"lock_id": prov["lock_id"], "secret": prov["secret"], "backup_digest": prov["backup_digest"],
                "mqtt": mqtt})
    if prov.get("fw_pubkey"):  # the release key firmware updates are checked with (docs/ota.md)
        cfg["fw_pubkey"] = prov["fw_pubkey"]
    if cloud_url:
        cfg["cloud_url"] = cloud_url
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(cfg, indent=1))
    tmp.chmod(0o600)  # it holds the lock's secret and broker password
    tmp.replace(path)
    return prov


def register(api: ApiClient, mac: str, name: str, address: str, timezone: str | None) -> str:
    """The lock id of MAC in the token's agency, registering it if the agency does not have it yet."""
    status, body = api.call("POST", "/locks", {"mac": mac, "name": name, "address": address,
                                               "timezone": timezone})
    if status == 201:
        return body["id"]
    if status == 409 and isinstance(body, dict) and body.get("lock_id"):
        return body["lock_id"]  # this agency already registered it: take that registration
    message = body.get("message", body) if isinstance(body, dict) else body
    raise CloudError(f"registering {mac} failed ({status}): {message}", status, body)


def init_from_cloud(a) -> int:
    d = Path(a.dir)
    if (d / "flash" / "config.json").exists():
        print(f"simlock: {d} already holds a lock (remove it first)", file=sys.stderr)
        return 2
    try:
        mac = canonical_mac(a.mac or "")
    except InvalidMac as e:
        print(f"simlock: malformed MAC {a.mac!r}: {e}", file=sys.stderr)
        return 2
    api = ApiClient(api_url(a.cloud), token=a.token)
    try:
        lock_id = register(api, mac, a.name or f"Simulated lock {mac[-4:]}",
                           a.address or "1 Simulation Street", a.timezone)
        prov = write_credentials(d / "flash", api, lock_id, a.ca)
    except CloudError as e:
        print(f"simlock: {e}", file=sys.stderr)
        return 1
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
    parser.add_argument("--timezone", help=f"IANA time zone (with --cloud; default: the cloud's, {DEFAULT_TIMEZONE})")
    parser.add_argument("--ca", help="the broker's CA certificate, copied to the lock (TLS)")
