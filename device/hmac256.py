"""HMAC-SHA256 over hashlib.sha256 (MicroPython has no hmac module) and a constant-time compare.

The pads are computed once per key, so a digest costs two SHA-256 runs over one block each plus the message.
"""
import hashlib

from micropython import const

_BLOCK = const(64)


class Hmac256:
    def __init__(self, key: bytes) -> None:
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()
        k = bytearray(_BLOCK)
        k[: len(key)] = key
        ip = bytearray(_BLOCK)
        op = bytearray(_BLOCK)
        for i in range(_BLOCK):
            ip[i] = k[i] ^ 0x36
            op[i] = k[i] ^ 0x5C
        self._ip = bytes(ip)
        self._op = bytes(op)

    def start(self):
        """The inner hash, to be fed the message in parts and handed to finish()."""
        return hashlib.sha256(self._ip)

    def finish(self, inner) -> bytes:
        o = hashlib.sha256(self._op)
        o.update(inner.digest())
        return o.digest()

    def digest(self, msg) -> bytes:
        h = hashlib.sha256(self._ip)
        h.update(msg)
        return self.finish(h)


def hmac_sha256(key: bytes, msg) -> bytes:
    return Hmac256(key).digest(msg)


def equal(a, b) -> bool:
    """Constant-time equality of two byte strings (time depends only on the length)."""
    if len(a) != len(b):
        return False
    r = 0
    for i in range(len(a)):
        r |= a[i] ^ b[i]
    return r == 0
