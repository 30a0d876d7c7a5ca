"""Host side (CPython) of the simulated lock's real-time mode: `tools/simlock run DIR --keypad-port N`.

Compiles what the real-time mode adds to the simulator build (sim/demo/realtime.py, keypad_page.py and
microdot, into build/demo/), then runs the firmware (`-m realtime`) on the unix port in real time, its JSON
events on our stdout. Powers it up again after a simulated power cycle or crash, like `simlock run`. SIGTERM
or SIGINT stop it.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from sim import mpbuild
from sim.board import exitcodes
from tools import bundle, mpycross

ROOT = mpbuild.ROOT
DEMO_BUILD = mpbuild.BUILD / "demo"
HEAP = "256k"  # the firmware plus the link, microdot and the page: more than the lock alone
_OWN = ("realtime", "keypad_page")


def build() -> str:
    """Compile the simulator, the demo modules and microdot; return the MICROPYPATH."""
    mpbuild.build()
    for name in _OWN:
        mpycross.compile_if_stale(ROOT / "sim" / "demo" / f"{name}.py", DEMO_BUILD / f"{name}.mpy")
    mdir = bundle.microdot_dir()
    for mod in bundle.MICRODOT_CORE:
        mpycross.compile_if_stale(mdir / f"{mod}.py", DEMO_BUILD / "microdot" / f"{mod}.mpy")
    return ":".join([".frozen", str(DEMO_BUILD), *mpbuild.micropypath().split(":")[1:]])


def run(sim_dir: str | os.PathLike, keypad_port: int, heap: str = HEAP, host: str = "127.0.0.1",
        setup_port: int = 0) -> int:
    """setup_port: power up with the setup button held; the setup portal then listens on that port."""
    d = Path(sim_dir).resolve()
    env = dict(os.environ, MICROPYPATH=build(), SIMLOCK_DIR=str(d), KEYPAD_PORT=str(keypad_port),
               KEYPAD_HOST=host, SETUP_PORT=str(setup_port or ""))
    from sim.sntp import SntpServer

    env["SIM_SNTP"] = SntpServer().start().addr  # the simulated network's time server (board.sntp)
    cmd = mpbuild.command(heap) + ["-m", "realtime"]
    state = {"child": None, "stop": False}

    def on_signal(signum, frame):
        state["stop"] = True
        c = state["child"]
        if c is not None and c.poll() is None:
            c.terminate()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while True:
        child = subprocess.Popen(cmd, env=env, cwd=str(ROOT), stdin=subprocess.DEVNULL)
        state["child"] = child
        rc = child.wait()
        if state["stop"]:
            return 0
        if rc in exitcodes.REBOOT:
            continue  # the board powers up again
        print(f'{{"event": "exit", "code": {rc}}}', flush=True)
        return rc


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir")
    ap.add_argument("--keypad-port", type=int, required=True)
    ap.add_argument("--heap", default=HEAP)
    ap.add_argument("--setup-port", type=int, default=0, help="hold the setup button: the portal on this port")
    a = ap.parse_args()
    sys.exit(run(a.dir, a.keypad_port, a.heap, setup_port=a.setup_port))
