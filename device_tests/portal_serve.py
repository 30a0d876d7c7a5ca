# Serves the setup portal on the unix port for device_tests/test_portal.py.
# argv: port config_path [status_json]. Saves go to config_path (temp file + rename), as JSON.
import sys
import json
import os
import portal

port = int(sys.argv[1])
cfg_path = sys.argv[2]
status = {"mac": "24a16054ab3c", "version": "0.1.0-test", "wifi": "not configured", "cloud": "offline"}
if len(sys.argv) > 3:
    status.update(json.loads(sys.argv[3]))


def get_status():
    st = dict(status)
    try:
        with open(cfg_path) as f:
            cfg = json.load(f)
        st["ssid"] = cfg.get("wifi_ssid")
        st["cloud_addr"] = cfg.get("cloud")
        st["has_password"] = bool(cfg.get("wifi_password"))
    except OSError:
        pass
    return st


def save(changes):
    try:
        with open(cfg_path) as f:
            cfg = json.load(f)
    except OSError:
        cfg = {}
    cfg.update(changes)
    with open(cfg_path + ".tmp", "w") as f:
        json.dump(cfg, f)
    os.rename(cfg_path + ".tmp", cfg_path)


p = portal.Portal(get_status, save)
mode = os.getenv("PORTAL_MODE") or "async"
if mode == "step":
    # a plain loop, as the firmware's main loop would run it
    import time
    st = portal.Stepper()
    st.start(p.serve("127.0.0.1", port))
    print("READY", port)
    while True:
        st.poll()
        time.sleep_ms(5)
else:
    import asyncio
    print("READY", port)
    asyncio.run(p.serve("127.0.0.1", port))
