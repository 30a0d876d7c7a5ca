"""Drive `tools/simlock run` from CPython: send one input line, get the JSON events it caused.

    with SimLock(dir) as s:          # boots, waits for ready + settled
        ev = s.send("5821")          # events up to the next {"event": "settled"}
        s.kinds(ev, "feedback")      # -> ["accepted"]
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIMLOCK = ROOT / "tools" / "simlock"


def init(d, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SIMLOCK), "init", str(d), *args], capture_output=True, text=True,
                          timeout=60)


class SimLock:
    def __init__(self, d, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, str(SIMLOCK), "run", str(d), *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1, start_new_session=True)
        self.boot = self._until_settled()

    def __enter__(self) -> "SimLock":
        return self

    def __exit__(self, *a) -> None:
        self.close()

    def _until_settled(self) -> list[dict]:
        out = []
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            ev = json.loads(line)
            out.append(ev)
            if ev["event"] == "settled":
                return out
        raise EOFError(f"simlock ended: {out}")

    def send(self, line: str) -> list[dict]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        ev = self._until_settled()
        if line.strip() == "!power-cycle":
            ev += self._until_settled() if not any(e["event"] == "ready" for e in ev) else []
        return ev

    def status(self) -> dict:
        return [e for e in self.send("!status") if e["event"] == "status"][0]

    def kill(self) -> None:
        """Cut the power for real: SIGKILL the simulator and the firmware process."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write("!quit\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=10)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.kill()

    @staticmethod
    def kinds(events: list[dict], event: str, key: str = "kind") -> list:
        return [e.get(key) for e in events if e["event"] == event]
