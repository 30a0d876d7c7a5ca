# Serves the virtual keypad page with a recording fake keypad, for device_tests/test_portal_keypad.py.
# argv: port. /state.json reports the keys seen (down/up order) and a door that opens on "#".
import sys
import asyncio
from keypad_page import KeypadPage

events = []
st = {"door": "closed", "led": False, "buzzer": False, "mac": "24a16054ab3c"}


def down(k):
    events.append("+" + k)
    if k == "#":
        st["door"] = "open"


def up(k):
    events.append("-" + k)


def state():
    s = dict(st)
    s["events"] = " ".join(events)
    return s


page = KeypadPage(down, up, state, hold_ms=20, gap_ms=10)
print("READY")
asyncio.run(page.serve("127.0.0.1", int(sys.argv[1])))
