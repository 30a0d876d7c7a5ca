"""The firmware release format (docs/ota.md): the signed release manifest and the bundle archive, read from
the flash a block at a time (the lock never holds a whole bundle in RAM).

archive  = b"KDB1" | count (u16) | count x entry
entry    = name length (u8) | name (utf-8, '/'-separated, relative) | size (u32) | SHA-256 (32) | data
manifest = b"KDFW1\\0" | version (ascii) | b"\\0" | target (ascii) | b"\\0" | size (u32) | SHA-256 (32) | flags (u8)
flags: bit 0 = the release may replace a higher version (a deliberate downgrade).
The release key signs the manifest (Ed25519); the manifest's SHA-256 covers the whole archive."""
import hashlib
import os

from micropython import const

from be32 import u32

MAGIC = b"KDB1"
_BLOCK = const(1024)


class BundleError(Exception):
    """args[0]: a short reason for the report (bad_archive, bad_file_hash, ...)."""


def manifest(version: str, target: str, size: int, sha: bytes, flags: int) -> bytes:
    return (b"KDFW1\x00" + version.encode() + b"\x00" + target.encode() + b"\x00"
            + bytes(((size >> 24) & 255, (size >> 16) & 255, (size >> 8) & 255, size & 255))
            + bytes(sha) + bytes((flags & 255,)))


def _read(f, n: int) -> bytes:
    b = f.read(n)
    if b is None or len(b) != n:
        raise BundleError("bad_archive")
    return b


def _makedirs(path: str) -> None:
    p = ""
    for part in path.split("/"):
        p = part if not p else p + "/" + part
        try:
            os.mkdir(p)
        except OSError:
            pass


def remove_tree(path: str) -> None:
    try:
        entries = list(os.ilistdir(path))
    except OSError:
        return
    for e in entries:
        p = path + "/" + e[0]
        if e[1] == 0x4000:
            remove_tree(p)
        else:
            os.remove(p)
    os.rmdir(path)


def _safe(name: str) -> bool:
    return bool(name) and not name.startswith("/") and ".." not in name.split("/") and "\\" not in name


def entries(f):
    """Yield (name, size, sha256) for each entry of the archive open in f, leaving f at the entry's data; the
    caller reads exactly size bytes before asking for the next one."""
    if _read(f, 4) != MAGIC:
        raise BundleError("bad_archive")
    hdr = _read(f, 2)
    for _ in range((hdr[0] << 8) | hdr[1]):
        n = _read(f, 1)[0]
        name = _read(f, n).decode()
        if not _safe(name):
            raise BundleError("bad_archive")
        size = u32(_read(f, 4), 0)
        yield name, size, _read(f, 32)


def unpack_steps(path: str, dest: str):
    """Unpack the archive at path into directory dest, checking every file's SHA-256; a generator that yields
    after each block so the main loop keeps running. Raises BundleError."""
    remove_tree(dest)
    _makedirs(dest)
    buf = bytearray(_BLOCK)
    with open(path, "rb") as f:
        for name, size, sha in entries(f):
            target = dest + "/" + name
            if "/" in name:
                _makedirs(target.rsplit("/", 1)[0])
            h = hashlib.sha256()
            left = size
            with open(target, "wb") as out:
                while left:
                    n = f.readinto(memoryview(buf)[: min(left, _BLOCK)])
                    if not n:
                        raise BundleError("bad_archive")
                    chunk = memoryview(buf)[:n]
                    h.update(chunk)
                    out.write(chunk)
                    left -= n
                    yield
            if h.digest() != sha:
                raise BundleError("bad_file_hash")
        if f.read(1):
            raise BundleError("bad_archive")
    yield True


def check_steps(path: str, dest: str):
    """The self-check of an unpacked slot: every file of the archive at path is in dest with its SHA-256.
    A generator like unpack_steps; raises BundleError."""
    buf = bytearray(_BLOCK)
    with open(path, "rb") as f:
        for name, size, sha in entries(f):
            f.seek(size, 1)
            h = hashlib.sha256()
            try:
                with open(dest + "/" + name, "rb") as g:
                    while True:
                        n = g.readinto(buf)
                        if not n:
                            break
                        h.update(memoryview(buf)[:n])
            except OSError:
                raise BundleError("missing_file")
            if h.digest() != sha:
                raise BundleError("bad_file_hash")
            yield
    yield True
