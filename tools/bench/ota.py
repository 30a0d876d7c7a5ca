"""Firmware-update figures: Ed25519 verification and the boot selector's install of a full bundle inside
MicroPython (unix port, 128k), then a full update over the link (mosquitto + the bridge + tools/simlock, the
lock at 128k): download time, the lock's heap sampled through download, switch and trial, and the bundle's
size (docs/ota.md)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nacl.signing import SigningKey

from sim import mpbuild

ROOT = mpbuild.ROOT
SCRIPT = ROOT / "device_tests" / "mp" / "bench_ota.py"
# 240 MHz Xtensa LX6 against this machine's x86 core for MicroPython's big-integer arithmetic (mpz, 16-bit
# digits on both): an assumed 30-60x, not measured here (no ESP32 on this machine)
ESP32_FACTOR = (30, 60)


def _inside(tmp: Path) -> dict:
    from cloud.firmware import release

    key = SigningKey.generate()
    files = release.compile_bundle(ROOT / "device", "9.0.0", "host")
    archive = release.pack(files)
    signed = release.sign(key, "9.0.0", "host", archive)
    (tmp / "fw.kdb").write_bytes(archive)
    fix = {"pubkey": bytes(key.verify_key).hex(),
           "manifest": release.manifest("9.0.0", "host", len(archive), bytes.fromhex(signed.sha256), 0).hex(),
           "sig": signed.signature, "archive": str(tmp / "fw.kdb"),
           "pending": {"ver": "9.0.0", "target": "host", "size": len(archive), "sha": signed.sha256,
                       "sig": signed.signature, "flags": 0}}
    (tmp / "bench.json").write_text(json.dumps(fix))
    work = tmp / "flash"
    work.mkdir()
    env = mpbuild.env(None, extra_path=[str(SCRIPT.parent)])
    env["OTA_BENCH"] = str(tmp / "bench.json")
    env["TEST_TMP"] = str(work)
    r = subprocess.run(mpbuild.command() + [str(SCRIPT)], env=env, cwd=str(ROOT), capture_output=True, text=True,
                       timeout=600)
    if r.returncode != 0:
        raise RuntimeError(r.stdout + r.stderr)
    out = {"files": len(files), "size": len(archive)}
    for line in r.stdout.splitlines():
        if line.startswith("{"):
            out.update(json.loads(line))
    return out


HEAP = os.environ.get("OTA_BENCH_HEAP", "128k")  # the firmware rule: everything fits under -X heapsize=128k


def _over_the_link(tmp: Path) -> dict:
    sys.path.insert(0, str(ROOT / "tests" / "e2e"))
    from e2e_stack import FLASK, Stack  # the e2e machinery: real mosquitto, web, bridge, simlock

    s = Stack(tmp)
    s.env["FIRMWARE_SIGNING_KEY"] = str(tmp / "release.key")
    s.env["E2E_HEAP"] = HEAP

    def flask(*args):
        r = subprocess.run([FLASK, "--app", "cloud", *args], env=s.env, cwd=str(ROOT), capture_output=True,
                           text=True, timeout=300)
        if r.returncode != 0:
            raise RuntimeError(r.stderr + r.stdout)
        return r.stdout

    flask("firmware", "keygen", "--out", s.env["FIRMWARE_SIGNING_KEY"])
    with s.running():
        lk = s.new_lock("24a1605400b1")
        lk.link_event("state", "connected", timeout=90)
        flask("firmware", "build", "--version", "9.0.0", "--target", "host")

        def heap() -> tuple[int, int]:
            m = lk.mark()
            lk.send("!status")
            e = lk.wait(lambda e: e.get("event") == "status", 30, m)
            return e["heap_used"], e["heap_free"]

        def ota(m, *states):
            return [e for e in lk.events[m:] if e.get("event") == "ota" and e.get("state") in states]

        base, base_free = heap()
        m = lk.mark()
        flask("firmware", "rollout", "--version", "9.0.0", "--lock", lk.lock_id)
        start = lk.wait(lambda e: e.get("event") == "ota" and e.get("state") in ("downloading", "refused"), 60, m)
        if start["state"] == "refused":
            raise RuntimeError(f"the lock at {HEAP} refused the release ({start.get('reason')}) with "
                               f"{base_free:,} B free when idle")
        peak, low = base, base_free
        errors = 0
        deadline = time.monotonic() + 600
        # sampled through the whole update: the download, the hash, the switch, the new version's trial
        while not ota(m, "confirmed", "refused", "rolled_back") and time.monotonic() < deadline:
            try:
                used, free = heap()
            except AssertionError:  # restarting: no answer for a moment
                continue
            peak, low = max(peak, used), min(low, free)
            time.sleep(0.5)
        errors = sum(1 for e in lk.events[m:] if e.get("event") == "link" and "MemoryError" in str(e.get("error")))
        done = ota(m, "downloaded", "refused")
        end = ota(m, "confirmed", "refused", "rolled_back")
        if not done or done[0]["state"] != "downloaded" or not end or end[0]["state"] != "confirmed":
            raise RuntimeError(f"the update did not complete at {HEAP}: {(done or end or [None])[0]}")
        ready = [e for e in lk.events[m:] if e.get("event") == "ready"]
        return {"download_s": done[0]["_t"] - start["_t"], "size": start["size"], "heap_idle": base,
                "heap_peak": peak, "free_idle": base_free, "free_low": low, "link_memory_errors": errors,
                "switched_to": ready[-1]["version"] if ready else None}


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="kd-ota-bench-") as tmp:
        a = Path(tmp) / "inside"
        a.mkdir()
        inside = _inside(a)
        v = inside["verify"]
        lo, hi = (v["median_us"] * f / 1e6 for f in ESP32_FACTOR)
        print(f"bundle: {inside['files']} files, {inside['size']:,} bytes (device/ compiled for the unix port)")
        print(f"Ed25519 verification, unix port at 128k ({v['runs']} runs): median {v['median_us'] / 1000:.1f} ms, "
              f"p95 {v['p95_us'] / 1000:.1f} ms, max {v['max_us'] / 1000:.1f} ms")
        print(f"  ESP32 at 240 MHz, estimated x{ESP32_FACTOR[0]}-{ESP32_FACTOR[1]}: {lo:.1f}-{hi:.1f} s")
        ins = inside["install"]
        print(f"boot selector install (signature + SHA-256 + unpack of {ins['size']:,} bytes): {ins['ms']} ms "
              f"on the unix port")
        b = Path(tmp) / "link"
        b.mkdir()
        link = _over_the_link(b)
        print(f"download of the full bundle over the link ({link['size']:,} bytes in 256-byte chunks, mosquitto "
              f"TLS + bridge + simlock): {link['download_s']:.1f} s = {link['size'] / link['download_s'] / 1024:.1f} KB/s")
        print(f"lock heap at {HEAP} (after a collect, sampled every 0.5 s through download, switch and trial): "
              f"in use idle {link['heap_idle']:,} B, peak {link['heap_peak']:,} B "
              f"(+{link['heap_peak'] - link['heap_idle']:,}); free idle {link['free_idle']:,} B, lowest "
              f"{link['free_low']:,} B; MemoryErrors in the link: {link['link_memory_errors']}")
        print(f"switched to {link['switched_to']} and confirmed")
    return 0
