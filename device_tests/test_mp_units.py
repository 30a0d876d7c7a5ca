"""The MicroPython-side unit tests (device_tests/mp/mp_*.py), each run on the unix port under the heap cap
(-X heapsize=128k) against the compiled firmware."""
import hashlib
import hmac
import os
import random

import pytest

from device_tests.mphelp import MP_DIR, run_mp, run_mp_script

MODULES = sorted(p.stem for p in MP_DIR.glob("mp_*.py"))


@pytest.mark.parametrize("module", MODULES)
def test_on_micropython(module, tmp_path):
    extra = {}
    if module == "mp_hmac":
        rnd = random.Random(1)
        lines = []
        for _ in range(40):
            k = bytes(rnd.getrandbits(8) for _ in range(rnd.choice([1, 16, 32, 63, 64, 65, 100])))
            m = bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 200)))
            lines.append(f"{k.hex()} {m.hex()} {hmac.new(k, m, hashlib.sha256).hexdigest()}\n")
        # the firmware's own code digests too: secret bytes(range(32)), codes 0000..0099
        secret = bytes(range(32))
        for i in range(100):
            c = f"{i:04d}".encode()
            lines.append(f"{secret.hex()} {c.hex()} {hmac.new(secret, c, hashlib.sha256).hexdigest()}\n")
        vec = tmp_path / "vectors.txt"
        vec.write_text("".join(lines))
        extra["HMAC_VECTORS"] = str(vec)
    r = run_mp(module, tmp_path, extra)
    assert r.returncode == 0, r.stdout + r.stderr
    assert " 0 failed" in r.stdout


def test_heap_and_decision_figures(tmp_path):
    """The bench's measurements, as a test: firmware heap <= 48 KB with 200 codes, decision well under 1 ms."""
    import json

    r = run_mp_script("bench_fw.py", tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    heap = [x["heap"] for x in rows if "heap" in x][0]
    assert heap["codes"] == 200 and heap["opened"] == 67
    assert heap["firmware_after_boot"] <= 48 * 1024 and heap["firmware_after_100"] <= 48 * 1024
    for d in (x["decision"] for x in rows if "decision" in x):
        assert d["median_us"] < 1000, d
