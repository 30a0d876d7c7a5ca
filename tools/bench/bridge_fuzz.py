"""Bridge uplink fuzzing at a larger budget: the properties of tests/bridge/test_bridge_fuzz.py with
KEYDROP_BRIDGE_FUZZ_SCALE (default 10) times make test's 2,500 cases, fresh random seeds each run."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main() -> int:
    scale = float(os.environ.get("KEYDROP_BRIDGE_FUZZ_SCALE", "10"))
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "tests/bridge/test_bridge_fuzz.py"], cwd=ROOT, env=dict(os.environ, KEYDROP_FUZZ_SCALE=str(scale)),
                       capture_output=True, text=True)
    ok = r.returncode == 0
    print(r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr[-2000:])
    if not ok:
        print(r.stdout[-4000:])
    print(json.dumps({"bench": "bridge_fuzz", "cases": int(2500 * scale), "passed": ok,
                      "seconds": round(time.monotonic() - t0, 1)}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
