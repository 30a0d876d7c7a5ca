"""SHA-256 of a file on the flash, 1 KB at a time, as a generator: yields None after each block, then
(digest, size). The updater steps it between main-loop passes; the boot selector drains it."""
import hashlib


def steps(path: str):
    h = hashlib.sha256()
    buf = bytearray(1024)
    n = 0
    with open(path, "rb") as f:
        while True:
            k = f.readinto(buf)
            if not k:
                break
            h.update(memoryview(buf)[:k])
            n += k
            yield None
    yield h.digest(), n
