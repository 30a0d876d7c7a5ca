"""Firmware figures on the unix port (printed as JSON lines for tools/bench/device.py):
decision time (submitting key -> relay command) with 10, 100 and 1000 codes stored, and heap in use after
boot and after 100 entries with 200 codes stored."""
import gc
import json
import sys
import time

import board as simboard  # noqa: E402  (the simulated board is not firmware)

gc.collect()
_h0 = gc.mem_alloc()
import config  # noqa: E402
import lock as lockmod  # noqa: E402
import main  # noqa: E402,F401  (defines main(); runs nothing when imported)

gc.collect()
_h1 = gc.mem_alloc()
HEAP_CODE = _h1 - _h0  # firmware bytecode loaded from .mpy (everything main.py imports)
import mputil  # noqa: E402  (test helpers, not firmware)

gc.collect()
HEAP0 = _h0 + gc.mem_alloc() - _h1  # what is not firmware: interpreter baseline, simulated board, helpers
T = 1767225600
KEYS = [ord(c) for c in "0123456789"]


def boot():
    cfg = config.load()
    b = simboard.Board(cfg)
    b.world.epoch_ms = T * 1000
    import main

    return b, lockmod.Lock(b, cfg, *main.drivers(b, cfg))


def codes(n):
    i = 0
    made = 0
    while made < n:
        d = mputil.digest("%04d" % i)
        i += 1
        if d == mputil.digest("5821"):
            continue
        made += 1
        yield made, d, T - 60, T + 86400


def decision(n, reps):
    mputil.fresh_dir()
    mputil.write_config()
    b, lk = boot()
    lk.set_trusted_time(T, "server")
    gc.collect()  # the 1000-code set needs 44 KB and 4 KB in one piece each: no garbage of the boot in between
    assert lk.install_codeset(1, codes(n), None, n)
    gc.collect()
    stamp = [0]

    def on_relay(v):
        if v:
            stamp[0] = time.ticks_us()

    b.on_relay = on_relay
    times = []
    now = b.ticks_ms()
    for r in range(reps):
        code = "%04d" % ((r * 37) % n)
        for c in code[:3]:
            lk.handle_key(ord(c), now)
        stamp[0] = 0
        t0 = time.ticks_us()
        lk.handle_key(ord(code[3]), now)
        assert stamp[0], code
        times.append(time.ticks_diff(stamp[0], t0))
        lk.relay.off()
    times.sort()
    return {"codes": n, "median_us": times[len(times) // 2], "p95_us": times[int(len(times) * 0.95)],
            "max_us": times[-1], "reps": reps}


def heap():
    mputil.fresh_dir()
    mputil.write_config()
    b, lk = boot()
    assert lk.install_codeset(1, codes(200), None, 200)
    lk = None
    b = None
    gc.collect()
    b, lk = boot()  # a fresh boot that loads the 200 codes from flash
    lk.set_trusted_time(T, "server")
    gc.collect()
    after_boot = gc.mem_alloc()
    wrong = 0
    now = b.ticks_ms()
    for i in range(100):
        code = "9%03d" % i if i % 3 == 2 else "%04d" % (i % 200)  # one in three wrong, never 5 in a row
        for c in code:
            lk.handle_key(ord(c), now)
        lk.relay.off()
        lk.poll(now)
    gc.collect()
    after_100 = gc.mem_alloc()
    return {"harness": HEAP0, "firmware_code": HEAP_CODE, "total_after_boot": after_boot,
            "total_after_100": after_100, "firmware_after_boot": after_boot - HEAP0,
            "firmware_after_100": after_100 - HEAP0,
            "codes": lk.codes.count, "opened": len([1 for r in lk.log.since(0, 200) if r[2] == 2])}


def main():
    which = sys.argv[1] if len(sys.argv) > 1 else "all"
    if which in ("all", "decision"):
        for n in (10, 100, 1000):
            print(json.dumps({"decision": decision(n, 200)}))
            gc.collect()
    if which in ("all", "heap"):
        print(json.dumps({"heap": heap()}))


main()
