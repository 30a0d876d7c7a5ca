"""Firmware figures, measured inside MicroPython (unix port, -X heapsize=128k, compiled .mpy):
keypad decision time (submitting key -> relay command, time.ticks_us) with 10, 100 and 1,000 codes stored,
and heap in use (gc.mem_alloc) after boot and after 100 entries with 200 codes stored."""
import json
import subprocess
import tempfile
from pathlib import Path

from sim import mpbuild

SCRIPT = mpbuild.ROOT / "device_tests" / "mp" / "bench_fw.py"
TARGET_US = 1000
TARGET_HEAP = 48 * 1024


def _run() -> list:
    env = mpbuild.env(None, extra_path=[str(SCRIPT.parent)])
    with tempfile.TemporaryDirectory() as tmp:
        env["TEST_TMP"] = tmp
        r = subprocess.run(mpbuild.command() + [str(SCRIPT)], env=env, cwd=str(mpbuild.ROOT),
                           capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(r.stdout + r.stderr)
    return [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]


def main() -> int:
    rows = _run()
    ok = True
    print("keypad decision time, submitting key -> relay command (host, unix port, 200 runs each):")
    for row in rows:
        d = row.get("decision")
        if d:
            flag = "ok" if d["p95_us"] <= TARGET_US else "OVER TARGET"
            ok &= d["p95_us"] <= TARGET_US
            print(f"  {d['codes']:>5} codes: median {d['median_us']} us, p95 {d['p95_us']} us, "
                  f"max {d['max_us']} us   (target <= {TARGET_US} us: {flag})")
    h = [r["heap"] for r in rows if "heap" in r][0]
    print(f"heap in use, {h['codes']} codes stored (-X heapsize=128k, 64-bit objects):")
    for label, key in (("after boot", "after_boot"), ("after 100 entries", "after_100")):
        fw = h["firmware_" + key]
        flag = "ok" if fw <= TARGET_HEAP else "OVER TARGET"
        ok &= fw <= TARGET_HEAP
        print(f"  {label:<18} firmware {fw / 1024:.1f} KB (code {h['firmware_code'] / 1024:.1f} KB + data "
              f"{(fw - h['firmware_code']) / 1024:.1f} KB; target <= 48 KB: {flag}); whole process "
              f"{h['total_' + key] / 1024:.1f} KB incl. {h['harness'] / 1024:.1f} KB interpreter baseline + "
              f"simulated board + bench helpers")
    print(f"  ({h['opened']} of the 100 entries opened; one in three was a wrong code)")
    return 0 if ok else 1
