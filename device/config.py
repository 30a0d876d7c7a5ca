"""config.json on the lock's flash: identity, secret, timings, pins. Missing keys take the defaults below
(the pin map of docs/architecture.md). load() never raises: a missing or broken file gives an unprovisioned
config (secret None), which main.py hands to the setup portal."""
import json
from binascii import unhexlify

PATH = "config.json"

DEFAULT_PINS = {
    "rows": [32, 33, 25, 26],
    "cols": [27, 14, 13],
    "relay": 23,
    "buzzer": 18,
    "led": 19,
    "button": 0,
    "sda": 21,
    "scl": 22,
}

DEFAULTS = {
    "lock_id": "",
    "secret": "",
    "relay_ms": 5000,
    "code_length": 4,
    "relay_active_high": True,
    "entry_timeout_ms": 10000,
}


def _hex(s, n: int):
    try:
        b = unhexlify(s)
    except (ValueError, TypeError):
        return None
    return b if len(b) == n else None


def load(path: str = PATH) -> dict:
    try:
        with open(path) as f:
            raw = json.load(f)
        if not isinstance(raw, dict):
            raw = {}
    except (OSError, ValueError):
        raw = {}
    cfg = dict(DEFAULTS)
    cfg.update(raw)
    pins = dict(DEFAULT_PINS)
    if isinstance(raw.get("pins"), dict):
        pins.update(raw["pins"])
    cfg["pins"] = pins
    cfg["secret_bytes"] = _hex(cfg.get("secret") or "", 32)
    bd = cfg.get("backup_digest")
    cfg["backup_digest_bytes"] = _hex(bd, 32) if bd else None
    lid = cfg.get("lock_id")
    cfg["provisioned"] = cfg["secret_bytes"] is not None and isinstance(lid, str) and len(lid) == 12
    return cfg


def portal_window(cfg: dict, held: bool, radio: bool):
    """The setup portal policy, decided once per boot (docs/firmware.md, "Setup portal").

    held: the setup button is held at power-up; radio: the board can open an access point (the ESP32; the
    simulator's network needs no settings). Returns None (no portal this boot), 0 (open for good: an
    unprovisioned lock has nothing to protect yet) or, for a provisioned lock whose button is held or which
    has no Wi-Fi network configured, the window in ms from boot after which it closes its portal and access
    point: portal_minutes, a whole number from 1 to 1440 (anything else gives the default, 10)."""
    if not cfg.get("provisioned"):
        return 0
    no_wifi = radio and not (cfg.get("wifi") or {}).get("ssid")
    if not (held or no_wifi):
        return None
    m = cfg.get("portal_minutes")
    if type(m) is not int or not 0 < m <= 1440:  # at most a day: well within the ESP32's ticks range
        m = 10
    return m * 60000
