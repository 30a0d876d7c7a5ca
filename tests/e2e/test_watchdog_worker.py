"""A stuck network worker resets the board (device/main.py's watchdog rule): the simulated lock (unix port,
128k) connected to a real mosquitto; its worker's next look at the Wi-Fi never returns (`!net hang`), the main
loop logs worker_stuck once the worker has been silent past worker_stuck_s and stops feeding the watchdog,
which resets the board; the lock comes back, reconnects and says why it started (in its hello's health)."""
from __future__ import annotations

import json
import subprocess
import time

import pytest

from e2e_stack import PY, ROOT, SimLock
from linkrig import LOCK_ID, LOCK_PW
from tools.mosquitto import Mosquitto, dynsec_client

pytestmark = [pytest.mark.e2e]


def test_a_stuck_worker_resets_the_board(tmp_path, env):
    b = Mosquitto(tmp_path / "mqtt", extra_clients=[dynsec_client(LOCK_ID, LOCK_PW, clientid="kd-" + LOCK_ID)])
    b.start()
    d = tmp_path / "lock"
    r = subprocess.run([PY, str(ROOT / "tools" / "simlock"), "init", str(d), "--lock-id", LOCK_ID], cwd=str(ROOT),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    p = d / "flash" / "config.json"
    cfg = json.loads(p.read_text())
    cfg["mqtt"] = {"host": "127.0.0.1", "port": b.port, "username": LOCK_ID, "password": LOCK_PW}
    cfg["worker_stuck_s"] = 2  # connected, the worker shows signs of life every pass of its loop (~50 ms)
    p.write_text(json.dumps(cfg))
    lk = SimLock(d, env).start()
    try:
        lk.link_event("state", "connected", timeout=60)
        mark = lk.mark()
        time.sleep(4)  # connected and well past the bound: no false alarm
        assert not [e for e in lk.events[mark:] if e.get("event") in ("reset", "ready")]
        lk.send("!net hang 120")
        t0 = time.monotonic()
        stuck = lk.wait(lambda e: e.get("event") == "log" and e.get("kind") == "worker_stuck", 30, mark)
        reset = lk.wait(lambda e: e.get("event") == "reset", 30, mark)
        ready = lk.wait(lambda e: e.get("event") == "ready", 30, mark)
        assert reset["reason"] == "watchdog" and ready["reset_cause"] == "watchdog"
        lk.link_event("state", "connected", since=mark, timeout=60)  # back in touch with the cloud
        print(f"stuck worker: worker_stuck logged {stuck['_t'] - t0:.2f} s, reset {reset['_t'] - t0:.2f} s "
              f"(real) after the hang began (worker_stuck_s 2 + watchdog 8 s of the world's time)")
    finally:
        lk.stop()
        b.stop()
