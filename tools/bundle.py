"""Build the firmware bundle that goes on a lock: device/ + microdot, compiled with mpy-cross.

    python -m tools.bundle [--target esp32|host] [--out DIR] [--no-mip]

The result is a tree that mirrors the board's flash, in build/<target>/ (gitignored):

    main.py, boot.py        kept as source: MicroPython runs main.py from source at boot
    <module>.mpy            every other module of device/ (tests excluded), compiled
    lib/microdot/*.mpy      the microdot web framework (setup portal), from the installed PyPI package
    package.json            an index for `mpremote mip install` from a local HTTP server (docs/installing.md)

`--target esp32` (the default) compiles with `-march=xtensawin`; `--target host` compiles without -march,
for the MicroPython unix port. Bytecode-only .mpy files are the same for both today; the target keeps
native code (@micropython.native / viper), should the firmware ever use it, right for the chip.

The bundle carries the lock's own MQTT client (device/mqtt.py, docs/firmware.md "MQTT client"): the
firmware does not use the `umqtt` frozen into the official image. The lock's own config.json is written by tools/provision.py, never by the bundle:
the bundle holds no secret and can be shared.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tools import mpycross

ROOT = Path(__file__).resolve().parent.parent
DEVICE_DIR = ROOT / "device"
BUILD_DIR = ROOT / "build"

TARGETS = {"esp32": ["-march=xtensawin"], "host": []}
# Modules MicroPython looks for as source files at boot: never compiled.
SOURCE_MODULES = {"main.py", "boot.py"}
# microdot modules always shipped; others (cors, session, …) only if device/ imports them.
MICRODOT_CORE = ("__init__", "microdot", "helpers")
# What never goes on a board from device/: tests, type stubs, caches, local configs/state, docs.
EXCLUDE_DIRS = {"__pycache__", "tests", "test"}
EXCLUDE_FILE_RE = re.compile(r"(^test_.*\.py$|_test\.py$|\.pyi$|\.pyc$|\.md$|^\.|^config(\..*)?\.json$)")
MIP_INDEX = "package.json"


class BundleError(Exception):
    """A bundle could not be built; the message says why, for a person."""


@dataclasses.dataclass
class BundleFile:
    dest: str  # path on the board, relative to its root, '/'-separated
    size: int
    origin: str  # where it came from, for the report


@dataclasses.dataclass
class Bundle:
    target: str
    out: Path
    files: list[BundleFile]

    @property
    def total(self) -> int:
        return sum(f.size for f in self.files)

    def report(self) -> str:
        lines = [f"bundle for {self.target} in {self.out}:"]
        for f in sorted(self.files, key=lambda f: f.dest):
            lines.append(f"  {f.dest:<34} {f.size:>7} B   ({f.origin})")
        lines.append(f"  {'total':<34} {self.total:>7} B in {len(self.files)} files")
        return "\n".join(lines)


def microdot_dir() -> Path:
    """The installed microdot package (PyPI), found the way Python itself would import it."""
    spec = importlib.util.find_spec("microdot")
    if spec is None or not spec.submodule_search_locations:
        raise BundleError("microdot is not installed in this Python (pip install -r requirements.txt)")
    return Path(next(iter(spec.submodule_search_locations)))


def device_sources(device_dir: Path = DEVICE_DIR) -> list[Path]:
    """Files of device/ that go on the board (relative paths), tests and local state excluded."""
    found = []
    for dirpath, dirnames, filenames in os.walk(device_dir):
        dirnames[:] = sorted(d for d in dirnames if d not in EXCLUDE_DIRS and not d.startswith("."))
        for name in sorted(filenames):
            if EXCLUDE_FILE_RE.search(name):
                continue
            found.append((Path(dirpath) / name).relative_to(device_dir))
    return found


def microdot_modules(device_dir: Path = DEVICE_DIR) -> list[str]:
    """microdot's core plus every microdot submodule device/ imports (e.g. `from microdot.cors import`)."""
    wanted = list(MICRODOT_CORE)
    pattern = re.compile(r"^\s*(?:from|import)\s+microdot\.(\w+)", re.M)
    for rel in device_sources(device_dir):
        if rel.suffix == ".py":
            for name in pattern.findall((device_dir / rel).read_text(encoding="utf-8")):
                if name not in wanted:
                    wanted.append(name)
    return wanted


def module_name(rel: Path) -> str:
    """The name a compiled module shows in tracebacks (mpy-cross -s): its module name (`ota`, `lib.x`), a name
    the lock interns anyway when it imports it. A file name (`ota.py`) would be one more name per module in
    every boot of an updated lock: names are heap on the board and never freed, and 38 of them took a lock
    at the 128k cap into its next name pool (docs/firmware.md, "The qstr pool")."""
    return rel.with_suffix("").as_posix().replace("/", ".")


def _compile(src: Path, dest: Path, shown_name: str, target: str) -> None:
    try:
        mpycross.compile(src, dest, shown_name, TARGETS[target])
    except mpycross.MpyCrossError as exc:
        raise BundleError(str(exc)) from None


def build(target: str = "esp32", out: Path | None = None, device_dir: Path = DEVICE_DIR,
          mip_index: bool = True) -> Bundle:
    """Compile device/ and microdot into `out` (default build/<target>/), replacing what was there."""
    if target not in TARGETS:
        raise BundleError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    out = Path(out) if out else BUILD_DIR / target
    sources = device_sources(device_dir)
    if not any(p.suffix == ".py" for p in sources):
        raise BundleError(f"no firmware sources in {device_dir}")
    # Build into a fresh sibling directory, then swap: a failed build never leaves half a bundle.
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        files: list[BundleFile] = []
        for rel in sources:
            src = device_dir / rel
            if rel.suffix == ".py" and rel.as_posix() not in SOURCE_MODULES:
                dest_rel = rel.with_suffix(".mpy").as_posix()
                _compile(src, stage / dest_rel, module_name(rel), target)
                origin = f"device/{rel.as_posix()}, compiled"
            else:
                dest_rel = rel.as_posix()
                (stage / dest_rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, stage / dest_rel)
                origin = f"device/{rel.as_posix()}"
            files.append(BundleFile(dest_rel, (stage / dest_rel).stat().st_size, origin))
        mdir = microdot_dir()
        for mod in microdot_modules(device_dir):
            src = mdir / f"{mod}.py"
            if not src.exists():
                raise BundleError(f"device/ imports microdot.{mod}, which the installed microdot lacks")
            dest_rel = f"lib/microdot/{mod}.mpy"
            _compile(src, stage / dest_rel, f"microdot.{mod}", target)
            files.append(BundleFile(dest_rel, (stage / dest_rel).stat().st_size, "microdot (PyPI), compiled"))
        if mip_index:
            write_mip_index(stage, files)
        stage.chmod(0o755)  # mkdtemp makes it private; the bundle is served over HTTP for mip
        if out.exists():
            shutil.rmtree(out)
        stage.rename(out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return Bundle(target, out, files)


def firmware_version() -> str:
    """`git describe` of the checkout (what the mip index announces), or 'unknown'."""
    try:
        proc = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT,
                              capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return proc.stdout.strip() or "unknown"


def write_mip_index(out: Path, files: list[BundleFile]) -> Path:
    """package.json for `mpremote mip install --target <board root> http://HOST:PORT/package.json`.

    URLs are relative: mip resolves them against the index's own URL, so the directory can be served
    from anywhere (`python -m http.server -d build/esp32`).
    """
    index = {
        "urls": [[f.dest, f.dest] for f in sorted(files, key=lambda f: f.dest)],
        "version": firmware_version(),
    }
    path = out / MIP_INDEX
    body = ",\n  ".join(json.dumps(u) for u in index["urls"])
    path.write_text('{"urls": [\n  %s\n], "version": %s}\n' % (body, json.dumps(index["version"])),
                    encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.bundle", description=__doc__.split("\n")[0])
    ap.add_argument("--target", choices=sorted(TARGETS), default="esp32",
                    help="esp32 (mpy-cross -march=xtensawin, default) or host (MicroPython unix port)")
    ap.add_argument("--host", dest="target", action="store_const", const="host",
                    help="same as --target host")
    ap.add_argument("--out", type=Path, help="output directory (default build/<target>/)")
    ap.add_argument("--no-mip", action="store_true", help="do not write package.json")
    args = ap.parse_args(argv)
    try:
        bundle = build(args.target, args.out, mip_index=not args.no_mip)
    except BundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(bundle.report())
    print(mpycross.version())
    return 0


if __name__ == "__main__":
    sys.exit(main())
