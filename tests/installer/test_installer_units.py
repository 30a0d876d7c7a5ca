"""The installer's pure helpers: config merging, stale-file cleanup, MAC forms, command-line errors."""
from __future__ import annotations

from pathlib import Path

from installer_support import run_tool
from tools import bundle, provision

CREDS = {"secret": "ab" * 32, "backup_digest": "cd" * 32,
         "mqtt": {"host": "h", "port": 1883, "tls": False, "username": "u", "password": "p"}}


def test_config_keeps_the_boards_own_settings():
    existing = {"lock_id": "old", "secret": "00", "wifi": {"ssid": "A", "password": "x"},
                "pins": {"relay": 4}, "relay_ms": 3000}
    cfg = provision.build_config(existing, "24a16054ab3c", CREDS, "https://c", None, None)
    assert cfg["lock_id"] == "24a16054ab3c" and cfg["secret"] == "ab" * 32 and cfg["backup_digest"] == "cd" * 32
    assert cfg["wifi"] == {"ssid": "A", "password": "x"} and cfg["pins"] == {"relay": 4}
    assert cfg["relay_ms"] == 3000 and cfg["cloud_url"] == "https://c" and cfg["mqtt"]["host"] == "h"
    cfg = provision.build_config(existing, "24a16054ab3c", CREDS, "https://c", "B", None)
    assert cfg["wifi"] == {"ssid": "B", "password": ""}
    assert provision.build_config(None, "x", CREDS, "u", None, None).get("wifi") is None


def test_stale_files():
    b = bundle.Bundle("esp32", Path("/nowhere"), [bundle.BundleFile(d, 1, "") for d in
                                                  ("main.py", "codes.mpy", "lib/microdot/microdot.mpy")])
    info = {"files": ["main.py", "codes.mpy", "codes.py", "gone.mpy", "config.json", "mine.py",
                      "keydrop_files.json", "lib/microdot/microdot.mpy"],
            "manifest": ["main.py", "codes.mpy", "gone.mpy", "config.json", "never-there.mpy"]}
    # what the last install put there and is gone now; a source shadowing a module. Never config or
    # the user's own files.
    assert provision.stale_files(info, b) == ["codes.py", "gone.mpy"]


def test_mac_forms():
    assert provision.normalise_mac("24:A1:60:54:AB:3C") == "24a16054ab3c"
    assert provision.normalise_mac("24a16054ab3c\n") == "24a16054ab3c"
    assert provision.normalise_mac("24a16054ab") is None and provision.normalise_mac(None) is None
    assert provision.pretty_mac("24a16054ab3c") == "24:a1:60:54:ab:3c"


def test_command_line_errors(monkeypatch):
    monkeypatch.delenv("KEYDROP_TOKEN", raising=False)
    proc = run_tool("--port", "/dev/null", "--cloud", "http://x")
    assert proc.returncode == 2 and "--token is required" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_tool("--port", "/dev/null", "--cloud", "ftp://x", "--token", "t")
    assert proc.returncode == 2 and "--cloud must be" in proc.stderr
