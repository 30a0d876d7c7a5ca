"""The whole installer path with nothing stubbed: the tool installs onto the PTY board (unix port), the
firmware then boots from that same flash (`tools/simlock run`, the simulated board) and connects over TLS to
mosquitto; the cloud's bridge verifies its hello and the tool, still polling, sees the lock become active.

Uses the end-to-end stack of tests/e2e (mosquitto with TLS, web, mailer, bridge as separate processes)."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from installer_support import MICROPYTHON, ROOT, PtyBoard

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def e2e(tmp_path_factory):
    sys.path.insert(0, str(ROOT / "tests" / "e2e"))
    try:
        from e2e_stack import SimLock, Stack, mosquitto_available
    except ImportError as exc:
        pytest.skip(f"the e2e stack is not available: {exc}")
    if not mosquitto_available():
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    if not MICROPYTHON:
        pytest.skip("the MicroPython unix port is not installed")
    with Stack(tmp_path_factory.mktemp("installer-e2e")).running() as stack:
        stack.SimLock = SimLock
        yield stack


def test_installed_lock_comes_online_by_itself(e2e, tmp_path):
    lock_dir = tmp_path / "lock"  # lock_dir/flash is the board's flash, for the PTY board and the simulator
    board = PtyBoard(lock_dir, mac="24a16054ab77")
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tools.provision", "--port", board.port, "--cloud", e2e.url,
             "--token", e2e.token, "--name", "Flat 77", "--address", "77 Quai des Tests, Lyon",
             "--timezone", "Europe/Paris", "--ca", e2e.ca, "--resume", "--no-reset",
             "--build-dir", str(tmp_path / "build"), "--wait", "120", "--poll", "0.5"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if line.startswith("[7/7]"):
                break
        assert seen and seen[-1].startswith("[7/7]"), "".join(seen) + proc.stderr.read()
        # "Power the lock up": the firmware boots from the flash the installer wrote (the unix port cannot
        # reset, so the simulator plays the board's next boot).
        (lock_dir / "world.json").write_text(json.dumps({"epoch_ms": int(time.time() * 1000)}))
        lock = e2e.SimLock(lock_dir, e2e.env).start()
        e2e.locks.append(lock)
        out, err = proc.communicate(timeout=150)
        out = "".join(seen) + out
        assert proc.returncode == 0, out + err + (lock_dir / "stderr.log").read_text(errors="replace")
        assert "lock 24a16054ab77 is online" in out
        status, body = e2e.api("GET", "/api/v1/locks/24a16054ab77")
        assert status == 200 and body["status"] == "active"
        e2e.wait_mail(e2e.owner_email, "online")  # the owner hears about it, with the backup key
    finally:
        board.close()
