"""Atomic, checksummed persistence of small files on the lock's flash.

File format: b"KD" | version (1 byte) | payload length (4 bytes, big endian) | payload | SHA-256(header + payload)[:8].

save(NAME): write NAME.tmp completely, rename NAME -> NAME.bak, rename NAME.tmp -> NAME.
A power cut at any instant leaves one of:
  NAME valid (old or new)                  -> use NAME
  NAME missing, NAME.tmp complete (new)    -> use NAME.tmp and finish the rename
  NAME missing/corrupt, NAME.tmp partial   -> use NAME.bak (the last good copy)
load(NAME) verifies the checksum of each candidate in that order and returns the first good payload.
"""
import hashlib
import json
import os

from micropython import const

from be32 import u32

_MAGIC = b"KD\x01"
_HDR = const(7)
_SUM = const(8)

corrupt_seen = 0  # how many bad candidates load() skipped since boot (reported in the lock status)
writes = 0  # files written since boot (a save, an append): the flash wear figure of the hello's health


def exists(path: str) -> bool:
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def save(name: str, *parts) -> None:
    """Persist the concatenation of parts (bytes-like objects) atomically under name."""
    global writes
    n = 0
    for p in parts:
        n += len(p)
    hdr = bytearray(_MAGIC + b"\x00\x00\x00\x00")
    hdr[3] = (n >> 24) & 0xFF
    hdr[4] = (n >> 16) & 0xFF
    hdr[5] = (n >> 8) & 0xFF
    hdr[6] = n & 0xFF
    h = hashlib.sha256(hdr)
    tmp = name + ".tmp"
    with open(tmp, "wb") as f:
        f.write(hdr)
        for p in parts:
            f.write(p)
            h.update(p)
        f.write(h.digest()[:_SUM])
    writes += 1
    if exists(name):
        # keep the current file as the last good copy (rename replaces an old .bak)
        _remove(name + ".bak")
        os.rename(name, name + ".bak")
    os.rename(tmp, name)


def append(name: str, data, clear: bool = False) -> None:
    """Add data at the end of the plain file name (clear: start it anew with data). No envelope: the caller's
    records prove themselves whole (accesslog.seal), as a cut append may leave part of one."""
    global writes
    with open(name, "wb" if clear else "ab") as f:
        f.write(data)
    writes += 1


def _read(path: str):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    if len(data) < _HDR + _SUM or data[:3] != _MAGIC:
        return None
    n = u32(data, 3)
    if len(data) != _HDR + n + _SUM:
        return None
    h = hashlib.sha256(memoryview(data)[: _HDR + n])
    if h.digest()[:_SUM] != data[_HDR + n :]:
        return None
    return memoryview(data)[_HDR : _HDR + n]


def load(name: str):
    """Return the payload (memoryview) of the newest good copy of name, or None if there is none."""
    global corrupt_seen
    for suffix in ("", ".tmp", ".bak"):
        path = name + suffix
        if not exists(path):
            continue
        data = _read(path)
        if data is None:
            corrupt_seen += 1
            continue
        if suffix == ".tmp":
            # a save was cut between its two renames: finish it so the next save cannot overwrite it
            if exists(name):
                _remove(name)
            os.rename(path, name)
        return data
    return None


def load_dict(name: str):
    """The JSON object saved under name, as a dict; None when there is no good copy, or it is not a JSON
    object (the state files: boot.bin, state.bin, ota.bin)."""
    data = load(name)
    if data is not None:
        try:
            d = json.loads(bytes(data))
            if isinstance(d, dict):
                return d
        except ValueError:
            pass
    return None


def put(name: str, key: str, value) -> None:
    """Set one key of the JSON object saved under name (created when there is none), atomically."""
    d = load_dict(name) or {}
    d[key] = value
    save(name, json.dumps(d).encode())


def remove(name: str) -> None:
    """Forget name and its copies; the current file goes last, so a cut in between leaves it as it was."""
    _remove(name + ".tmp")
    _remove(name + ".bak")
    _remove(name)
