"""Compile the firmware (device/*.py) and the simulated board (sim/board/*.py) to .mpy with mpy-cross
into build/, and say how to run them on the MicroPython unix port. Shared by device_tests, tools/simlock and
tools/bench/device.py (CPython)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build"
HEAP = "128k"
# modules owned by other areas: a compile error there is reported but does not stop the lock's build
OPTIONAL = {"link", "protocol", "portal"}


def tool(name: str) -> str:
    p = ROOT / ".venv" / "bin" / name
    if p.exists():
        return str(p)
    found = shutil.which(name) or shutil.which(name, path=os.path.dirname(sys.executable))
    if not found:
        raise RuntimeError(f"{name} not found (make venv)")
    return found


def _compile(src_dir: Path, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    mpy_cross = tool("mpy-cross")
    for src in sorted(src_dir.glob("*.py")):
        if src.name == "__init__.py":
            continue
        out = out_dir / (src.stem + ".mpy")
        if out.exists() and out.stat().st_mtime >= src.stat().st_mtime:
            continue
        tmp = out.with_suffix(f".mpy.{os.getpid()}")
        r = subprocess.run([mpy_cross, "-s", src.name, "-o", str(tmp), str(src)], capture_output=True, text=True)
        if r.returncode != 0:
            tmp.unlink(missing_ok=True)
            if src.stem in OPTIONAL:
                print(f"mpbuild: skipping {src.name}: {r.stderr.strip()}", file=sys.stderr)
                continue
            raise RuntimeError(f"mpy-cross {src}: {r.stderr}")
        os.replace(tmp, out)
    # drop outputs whose source is gone
    for out in out_dir.glob("*.mpy"):
        if not (src_dir / (out.stem + ".py")).exists():
            out.unlink(missing_ok=True)


def build() -> str:
    """Compile what changed; return the MICROPYPATH that runs the firmware on the simulated board."""
    _compile(ROOT / "device", BUILD / "device")
    _compile(ROOT / "sim" / "board", BUILD / "sim")
    _compile(ROOT / "hostlib" / "umqtt", BUILD / "hostlib" / "umqtt")  # the host's umqtt.simple (link)
    return micropypath()


def micropypath() -> str:
    return ":".join([".frozen", str(BUILD / "sim"), str(BUILD / "device"), str(BUILD / "hostlib")])


def env(sim_dir: str | os.PathLike | None = None, extra_path: list[str] | None = None) -> dict:
    e = dict(os.environ)
    path = build()
    if extra_path:
        path = ":".join([".frozen", *map(str, extra_path), *path.split(":")[1:]])
    e["MICROPYPATH"] = path
    if sim_dir is not None:
        e["SIMLOCK_DIR"] = str(Path(sim_dir).resolve())
    else:
        e.pop("SIMLOCK_DIR", None)
    return e


def command(heap: str = HEAP) -> list[str]:
    return [tool("micropython"), "-X", f"heapsize={heap}"]
