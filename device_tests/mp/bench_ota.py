"""Firmware-update figures inside MicroPython (unix port, under the heap cap): Ed25519 verification time,
and the boot selector's whole install of a bundle (signature, hash, unpack), with the heap it used.
Driven by tools/bench/ota.py, which makes the signed bundle (OTA_BENCH: a JSON file)."""
import gc
import json
import os
import time
from binascii import unhexlify

import bootinstall
import bootsel
import bootstate
import ed25519

FIX = json.load(open(os.getenv("OTA_BENCH")))
os.chdir(os.getenv("TEST_TMP"))
with open("config.json", "w") as f:
    json.dump({"fw_pubkey": FIX["pubkey"]}, f)

pk = unhexlify(FIX["pubkey"])
msg = unhexlify(FIX["manifest"])
sig = unhexlify(FIX["sig"])
runs = []
for _ in range(int(FIX.get("runs", 20))):
    gc.collect()
    t = time.ticks_us()
    ok = ed25519.verify(pk, msg, sig)
    runs.append(time.ticks_diff(time.ticks_us(), t))
    assert ok
runs.sort()
print(json.dumps({"verify": {"median_us": runs[len(runs) // 2], "p95_us": runs[int(len(runs) * 0.95)],
                             "max_us": runs[-1], "runs": len(runs)}}))

# the selector's install of a pending release, from fw.bin
with open(FIX["archive"], "rb") as src, open(bootstate.ARCHIVE, "wb") as dst:
    while True:
        b = src.read(1024)
        if not b:
            break
        dst.write(b)
st = bootstate.load()
st["pending"] = FIX["pending"]
bootstate.save(st)
import sys


class _Restart(Exception):
    pass


def _restart():
    raise _Restart()


bootinstall._restart = _restart  # the selector restarts the board between the install and the trial
gc.collect()
before = gc.mem_alloc()
gc.collect()
t = time.ticks_ms()
try:
    bootsel.choose(set(sys.modules), "")
    raise AssertionError("no restart after the install")
except _Restart:
    pass
dt = time.ticks_diff(time.ticks_ms(), t)  # signature, hash, unpack and self-check, up to the restart
trial = bootsel.choose(set(sys.modules), "")  # the trial's boot
st = bootstate.load()
assert st["slot"] == "a" and trial, st
import micropython

print(json.dumps({"install": {"ms": dt, "size": FIX["pending"]["size"]}}))
