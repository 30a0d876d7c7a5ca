"""Flash wear of a simulated day (device_tests/mp/bench_flash.py, inside MicroPython at -X heapsize=128k): the
files the firmware writes and their bytes for 20 entries, 2 code changes, a reconnect an hour and a power
cut, and the projected life of the flash."""
import json
import subprocess
import tempfile

from sim import mpbuild

SCRIPT = mpbuild.ROOT / "device_tests" / "mp" / "bench_flash.py"
RING_REWRITE = 10 + 128 * 16 + 15  # what one event cost before the log was appended: log.bin rewritten whole
BLOCKS = 512  # the LittleFS partition of a 4 MB ESP32 (MicroPython's default: 2 MB) in 4 KB erase blocks
CYCLES = 100_000  # erase cycles per block
ERASES_PER_WRITE = 3  # pessimistic: each file written costs its last block copied and a metadata pair commit


def main() -> int:
    env = mpbuild.env(None, extra_path=[str(SCRIPT.parent)])
    with tempfile.TemporaryDirectory() as tmp:
        env["TEST_TMP"] = tmp
        r = subprocess.run(mpbuild.command() + [str(SCRIPT)], env=env, cwd=str(mpbuild.ROOT), capture_output=True,
                           text=True, timeout=600)
    rows = [json.loads(ln) for ln in r.stdout.splitlines() if ln.startswith("{")]
    if r.returncode != 0 or not rows:
        print(f"flash bench failed:\n{r.stdout}{r.stderr}")
        return 1
    d = rows[0]
    print("flash writes of a simulated day (20 entries, 2 code changes, 24 reconnects, 1 power cut), 128k heap:")
    for name, (n, b) in sorted(d["files"].items()):
        print(f"  {name:<6} {n:>4} files written, {b:>6} bytes")
    log_n = d["files"].get("log", [0, 0])[0]
    before = d["bytes"] - d["files"].get("log", [0, 0])[1] + log_n * RING_REWRITE
    print(f"  total  {d['writes']:>4} files written, {d['bytes']:>6} bytes per day "
          f"({d['last_seq']} access-log records, 16 bytes each, appended)")
    print(f"  with the access log rewritten whole per record, as before: {before} bytes per day "
          f"({log_n} x {RING_REWRITE} B for the log)")
    per_day = d["writes"] * ERASES_PER_WRITE / BLOCKS
    print(f"  projected flash life: {CYCLES / per_day / 365:,.0f} years (LittleFS, {BLOCKS} blocks of 4 KB wear-"
          f"levelled, {CYCLES:,} cycles each, {ERASES_PER_WRITE} block erases per file written)")
    return 0
