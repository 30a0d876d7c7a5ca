"""Run MicroPython-side test modules (device_tests/mp/mp_*.py) on the unix port under the heap cap."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from sim import mpbuild

MP_DIR = Path(__file__).resolve().parent / "mp"


def run_mp(module: str, tmp: Path, env_extra: dict | None = None, heap: str = mpbuild.HEAP,
           timeout: float = 300) -> subprocess.CompletedProcess:
    env = mpbuild.env(None, extra_path=[str(MP_DIR)])
    env["TEST_TMP"] = str(tmp)
    if env_extra:
        env.update(env_extra)
    return subprocess.run(mpbuild.command(heap) + ["-m", "runner", module], env=env, cwd=str(mpbuild.ROOT),
                          capture_output=True, text=True, timeout=timeout)


def run_mp_script(script: str, tmp: Path, heap: str = mpbuild.HEAP, timeout: float = 300,
                  env_extra: dict | None = None):
    env = mpbuild.env(None, extra_path=[str(MP_DIR)])
    env["TEST_TMP"] = str(tmp)
    env.update(env_extra or {})
    return subprocess.run(mpbuild.command(heap) + [str(MP_DIR / script)], env=env, cwd=str(mpbuild.ROOT),
                          capture_output=True, text=True, timeout=timeout)
