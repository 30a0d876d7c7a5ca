"""Compile the firmware (device/*.py) and the simulated board (sim/board/*.py) to .mpy with mpy-cross
into build/, and say how to run them on the MicroPython unix port. Shared by device_tests, tools/simlock and
tools/bench/device.py (CPython)."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from tools import mpycross

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build"
HEAP = "128k"


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
    for src in sorted(src_dir.glob("*.py")):
        if src.name != "__init__.py":
            # the source name tracebacks show is the module's own file, the string the importer keeps as its
            # __file__: one qstr for both (qstrs are heap on the unix port, and never freed)
            out = out_dir / (src.stem + ".mpy")
            mpycross.compile_if_stale(src, out, str(out))
    # drop outputs whose source is gone
    for out in out_dir.glob("*.mpy"):
        if not (src_dir / (out.stem + ".py")).exists():
            out.unlink(missing_ok=True)


def build() -> str:
    """Compile what changed; return the MICROPYPATH that runs the firmware on the simulated board."""
    _compile(ROOT / "device", BUILD / "device")
    _compile(ROOT / "sim" / "board", BUILD / "sim")
    return micropypath()


def micropypath() -> str:
    return ":".join([".frozen", str(BUILD / "sim"), str(BUILD / "device")])


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
