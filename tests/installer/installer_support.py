"""Helpers for the installer tests: a "board" that is the MicroPython unix port behind a pseudo-terminal
(socat), and the tool run as an installer runs it. The cloud they install against is tests/live_cloud.py.

The board's flash is a temporary directory: the unix port's filesystem root is its working directory.
The unix port has no `network` module, so the board's MAC is the file `keydrop_mac` there: that is the
host-testing seam of tools/provision.py's probe (docs/installing.md, "Testing without a board").
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.live_cloud import LiveCloud

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MICROPYTHON = shutil.which("micropython", path=str(BIN)) or shutil.which("micropython")


class PtyBoard:
    """socat PTY <-> `micropython` started in `flash`. Killed by its own process group at the end."""

    def __init__(self, tmp: Path, mac: str | None = "24a16054ab3c", program: list[str] | None = None):
        self.flash = tmp / "flash"
        self.flash.mkdir(parents=True, exist_ok=True)
        self.port = str(tmp / "tty")
        self.mac = mac
        if mac:
            (self.flash / "keydrop_mac").write_text(mac + "\n")
        if not shutil.which("socat"):
            pytest.skip("socat is not installed (apt-get install socat)")
        program = program or [MICROPYTHON]
        self.proc = subprocess.Popen(
            ["socat", f"PTY,link={self.port},raw,echo=0", f"EXEC:{' '.join(program)},pty,raw,echo=0"],
            cwd=self.flash, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 10
        while not os.path.exists(self.port):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError("socat did not create the PTY")
            time.sleep(0.05)
        time.sleep(0.2)  # let the child print its banner

    def mpremote(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, "-m", "mpremote", "connect", self.port, "resume", *args],
                              capture_output=True, text=True, timeout=60)
        if check and proc.returncode != 0:
            raise AssertionError(f"mpremote {args} failed: {proc.stdout}\n{proc.stderr}")
        return proc

    def close(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)  # socat and its micropython child, started here
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def run_tool(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """python -m tools.provision, as an installer runs it, from the repository root."""
    return subprocess.run([sys.executable, "-m", "tools.provision", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def tool_args(board: PtyBoard, cloud: LiveCloud, *extra: str, token: str | None = None) -> list[str]:
    """The unix port needs --resume (a soft reset ends it) and --no-reset (it has no machine.reset)."""
    return ["--port", board.port, "--cloud", cloud.url, "--token", token or cloud.token, "--resume",
            "--no-reset", "--build-dir", str(board.flash.parent / "build"), *extra]
