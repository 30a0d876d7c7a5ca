# portal.run() as main.py calls it, with a fake board, for device_tests/test_portal.py.
# argv: port config_path. Prints the portal policy's cases (config.portal_window), then serves through the
# returned service.
import sys
import json
import time
import config
import portal


class FakeBoard:
    def __init__(self, held=False):
        self.held = held
        self.ap = None

    def setup_requested(self):
        return self.held

    def mac(self):
        return "24a16054ab3c"

    def start_ap(self, essid, password=None):
        self.ap = essid
        print(json.dumps({"event": "ap", "essid": essid, "password": password}))
        return "192.168.4.1"

    def wlan(self):
        return None


prov = {"provisioned": True, "wifi": {"ssid": "Flat"}}
bare = {"provisioned": True}
W = config.portal_window  # (cfg, button held, board has a radio)
cases = {
    "provisioned": W(prov, False, True),
    "held": W(prov, True, True),
    "unprovisioned": W({"provisioned": False}, False, True),
    "unprovisioned_sim": W({"provisioned": False}, False, False),
    "no_wifi": W(bare, False, True),
    "no_wifi_sim": W(bare, False, False),
    "held_sim": W(bare, True, False),
    "minutes_2": W(dict(bare, portal_minutes=2), True, True),
    "minutes_1440": W(dict(bare, portal_minutes=1440), True, True),
}
for bad in ("5", 0, -1, 1441, True, 2.5, None):
    cases["bad_%r" % (bad,)] = W(dict(bare, portal_minutes=bad), True, True)
print(json.dumps({"event": "window", "cases": cases}))
port = int(sys.argv[1])
b = FakeBoard(held=True)
svc = portal.run(b, {"provisioned": True, "lock_id": "24a16054ab3c"}, sys.argv[2], "127.0.0.1", port)
print(json.dumps({"event": "service", "ok": svc is not None}))
while True:
    svc.poll(0)
    time.sleep_ms(5)
