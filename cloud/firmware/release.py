"""Firmware releases on the cloud side: the release signing key (a file outside the database), the bundle
archive and the signed manifest, in the formats the lock reads (device/fwbundle.py, docs/ota.md)."""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

from nacl.signing import SigningKey

MAGIC = b"KDB1"
DOWNGRADE = 1
KEY_HEADER = "KeyDrop firmware release signing key (Ed25519 seed, hex). Keep it off the database host.\n"
VERSION_RE = re.compile(r"^\d{1,6}(\.\d{1,6}){0,3}$")
TARGETS = ("esp32", "host")


class ReleaseError(Exception):
    """A release cannot be made; the message says why, for a person."""


def parse_version(v: str) -> tuple[int, ...]:
    if not isinstance(v, str) or not VERSION_RE.match(v):
        raise ReleaseError(f"version {v!r} is not dot-separated whole numbers, e.g. 1.4.2")
    return tuple(int(p) for p in v.split("."))


# ---------------------------------------------------------------- the key


def write_key(path: Path) -> str:
    """Make a new release key pair in path (created 0600, never overwritten); returns the public key (hex)."""
    sk = SigningKey.generate()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ReleaseError(f"{path} exists already: a release key is never overwritten (locks trust it)")
    except OSError as exc:
        raise ReleaseError(f"cannot create {path}: {exc.strerror}")
    with os.fdopen(fd, "w") as f:
        f.write(KEY_HEADER + bytes(sk).hex() + "\n")
    return bytes(sk.verify_key).hex()


def load_key(path: str | os.PathLike | None) -> SigningKey:
    if not path:
        raise ReleaseError("FIRMWARE_SIGNING_KEY is not set: it names the release key file "
                           "(make one with `flask --app cloud firmware keygen --out FILE`)")
    try:
        text = Path(path).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise ReleaseError(f"cannot read the release key {path}: {exc}")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("KeyDrop")]
    try:
        seed = bytes.fromhex(lines[-1])
        if len(seed) != 32:
            raise ValueError
    except (ValueError, IndexError):
        raise ReleaseError(f"{path} is not a KeyDrop release key file")
    return SigningKey(seed)


def public_key_hex(path: str | os.PathLike | None) -> str | None:
    """The public half of the configured release key, for the locks' provisioning; None when none is set."""
    if not path:
        return None
    return bytes(load_key(path).verify_key).hex()


# ---------------------------------------------------------------- the bundle


def manifest(version: str, target: str, size: int, sha: bytes, flags: int) -> bytes:
    return (b"KDFW1\x00" + version.encode() + b"\x00" + target.encode() + b"\x00"
            + struct.pack(">I", size) + sha + bytes((flags,)))


def pack(files: dict[str, bytes]) -> bytes:
    """The archive the lock downloads: every file with its size and SHA-256."""
    out = [MAGIC, struct.pack(">H", len(files))]
    for name in sorted(files):
        data = files[name]
        raw = name.encode()
        if not raw or len(raw) > 255 or name.startswith("/") or ".." in name.split("/"):
            raise ReleaseError(f"bad file name in the bundle: {name!r}")
        out += [bytes((len(raw),)), raw, struct.pack(">I", len(data)), hashlib.sha256(data).digest(), data]
    return b"".join(out)


@dataclass
class Signed:
    version: str
    target: str
    flags: int
    data: bytes
    sha256: str
    signature: str


def sign(key: SigningKey, version: str, target: str, data: bytes, flags: int = 0) -> Signed:
    sha = hashlib.sha256(data).digest()
    sig = key.sign(manifest(version, target, len(data), sha, flags)).signature
    return Signed(version, target, flags, data, sha.hex(), sig.hex())


def compile_bundle(device_dir: Path, version: str, target: str) -> dict[str, bytes]:
    """device_dir compiled for the board by the project's bundler (mpy-cross), with version.py saying
    `version`: {path on the board: bytes}."""
    from tools import bundle

    if target not in TARGETS:
        raise ReleaseError(f"unknown target {target!r}: {', '.join(TARGETS)}")
    if not (device_dir / "main.py").is_file():
        raise ReleaseError(f"{device_dir} holds no firmware (no main.py)")
    with tempfile.TemporaryDirectory(prefix="kd-fw-") as tmp:
        src = Path(tmp) / "device"
        shutil.copytree(device_dir, src, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        (src / "version.py").write_text(f'"""Firmware version, reported by the link."""\nVERSION = "{version}"\n')
        try:
            built = bundle.build(target, Path(tmp) / "out", device_dir=src, mip_index=False)
        except bundle.BundleError as exc:
            raise ReleaseError(str(exc))
        return {f.dest: (built.out / f.dest).read_bytes() for f in built.files}
