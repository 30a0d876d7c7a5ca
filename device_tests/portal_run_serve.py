# portal.run() as main.py calls it, with a fake board, for device_tests/test_portal.py.
# argv: port config_path. Prints the wanted() policy cases, then serves through the returned service.
import sys
import json
import time
import portal


class FakeBoard:
    def __init__(self, held=False, radio=True):
        self.held = held
        self.ap = None
        if not radio:
            self.start_ap = None

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


class NoRadio:
    def setup_requested(self):
        return False


prov = {"provisioned": True, "wifi": {"ssid": "Flat"}}
cases = {
    "provisioned": portal.wanted(FakeBoard(), prov),
    "held": portal.wanted(FakeBoard(held=True), prov),
    "unprovisioned": portal.wanted(FakeBoard(), {"provisioned": False}),
    "no_wifi": portal.wanted(FakeBoard(), {"provisioned": True}),
    "no_wifi_sim": portal.wanted(NoRadio(), {"provisioned": True}),
}
print(json.dumps({"event": "wanted", "cases": cases}))
port = int(sys.argv[1])
b = FakeBoard(held=True)
svc = portal.run(b, {"provisioned": True, "lock_id": "24a16054ab3c"}, sys.argv[2], "127.0.0.1", port)
print(json.dumps({"event": "service", "ok": svc is not None}))
while True:
    svc.poll(0)
    time.sleep_ms(5)
