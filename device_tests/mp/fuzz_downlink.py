"""Feeds the payloads of a file (FUZZ_CASES: u32 big-endian length + bytes, repeated) to the firmware's downlink
parser (device/downlink.py) next to a booted Lock at the heap cap, and prints one JSON line: how many cases,
the messages and drop reasons they gave, any exception that escaped, and the free heap before and after."""
import gc
import json
import os

import mputil
import protocol as P
from downlink import Downlink
from linkmsg import Refused, State

mputil.fresh_dir()
mputil.write_config()
# the buffers first (the firmware reserves them right after the lock's, before anything else of the link)
dl = Downlink(P.Envelope(mputil.SECRET, "24a16054ab3c"))
sim = mputil.Sim()
topic = b"lock/24a16054ab3c/down"
out = {"cases": 0, "kinds": {}, "reasons": {}, "escaped": [], "states": [], "too_big": 0}
gc.collect()
out["free_before"] = gc.mem_free()
with open(os.getenv("FUZZ_CASES"), "rb") as f:
    while True:
        h = f.read(4)
        if len(h) < 4:
            break
        n = h[0] << 24 | h[1] << 16 | h[2] << 8 | h[3]
        rx = dl.receiving()
        out["cases"] += 1
        if n > len(rx):  # the client drops these before the parser (tests/e2e/test_mqtt_client.py)
            f.seek(n, 1)  # skipped, not read: the harness must not allocate what the lock never would
            out["too_big"] += 1
            continue
        got = f.readinto(memoryview(rx)[:n]) if n else 0
        try:
            msg = dl.parse(topic, memoryview(rx)[:got], True)
        except BaseException as e:  # the parser must never let one out
            out["escaped"].append(repr(e))
            continue
        k = type(msg).__name__
        out["kinds"][k] = out["kinds"].get(k, 0) + 1
        if isinstance(msg, Refused):
            out["reasons"][msg.reason] = out["reasons"].get(msg.reason, 0) + 1
        elif isinstance(msg, State):
            if len(out["states"]) < 8:
                out["states"].append([msg.rev, len(msg.codes)])
            dl.done()
        msg = None
        if out["cases"] % 10 == 0:
            gc.collect()
            out["min_free"] = min(out.get("min_free", 1 << 30), gc.mem_free())
gc.collect()
out["free_after"] = gc.mem_free()
print(json.dumps(out))
