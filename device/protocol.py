"""Lock <-> cloud message envelope, version 1 (docs/protocol.md). Pure logic: no network, no hardware.

payload = hex(HMAC-SHA256(secret, b"KD1\\0" + topic + b"\\0" + body)) + body, body = compact JSON object.
The MAC covers the exact body bytes; the receiver verifies before parsing.
"""
import hashlib
import json
from binascii import a2b_base64, hexlify

from hmac256 import equal

V = 1
PREFIX = b"KD1\x00"
SIG_LEN = 64
MAX_DOWN = 16384
MAX_UP = 4096
MAX_CODES = 200
LOG_BATCH = 16


class ProtocolError(Exception):
    """reason (args[0]) is one of: oversize, bad_signature, malformed, bad_version, unknown_type."""


class Envelope:
    """Signs and opens messages for one lock. Holds the HMAC pads, never exposes the secret."""

    def __init__(self, secret, lock_id):
        k = bytearray(64)
        key = bytes(secret)
        if len(key) > 64:
            key = hashlib.sha256(key).digest()
        k[: len(key)] = key
        ip = bytearray(64)
        op = bytearray(64)
        for i in range(64):
            ip[i] = k[i] ^ 0x36
            op[i] = k[i] ^ 0x5C
        self._ip = bytes(ip)
        self._op = bytes(op)
        self.up = ("lock/%s/up" % lock_id).encode()
        self.down = ("lock/%s/down" % lock_id).encode()

    def mac(self, topic, body):
        h = hashlib.sha256(self._ip)
        h.update(PREFIX)
        h.update(topic)
        h.update(b"\x00")
        h.update(body)
        o = hashlib.sha256(self._op)
        o.update(h.digest())
        return o.digest()

    def seal(self, topic, obj):
        """obj (dict) -> payload bytes for topic."""
        body = json.dumps(obj).encode()
        return hexlify(self.mac(topic, body)) + body

    def seal_up(self, obj):
        p = self.seal(self.up, obj)
        if len(p) > MAX_UP:
            raise ProtocolError("oversize")
        return p

    def open(self, topic, payload, limit=MAX_DOWN):
        """Verify and parse a payload received on topic. Returns the body dict or raises ProtocolError."""
        n = len(payload)
        if n > limit:
            raise ProtocolError("oversize")
        if n < SIG_LEN + 2:
            raise ProtocolError("malformed")
        mv = memoryview(payload)
        body = mv[SIG_LEN:]
        sig = bytes(mv[:SIG_LEN])
        want = hexlify(self.mac(topic, body))
        if not equal(sig, want):
            raise ProtocolError("bad_signature")
        try:
            obj = json.loads(body)
        except Exception:
            raise ProtocolError("malformed")
        if not isinstance(obj, dict):
            raise ProtocolError("malformed")
        if obj.get("v") != V:
            raise ProtocolError("bad_version")
        return obj


def _int(x):
    # bool is an int subclass in CPython; refuse it, and anything that isn't an int
    if not isinstance(x, int) or isinstance(x, bool):
        raise ProtocolError("malformed")
    return x


def parse_state(obj):
    """A verified "state" body -> (revision, [(code_id, digest32, from, until)], backup_digest|None)."""
    try:
        rev = _int(obj["rev"])
        rows = obj["codes"]
        if not isinstance(rows, list) or len(rows) > MAX_CODES:
            raise ProtocolError("malformed")
        blob = obj.get("d") or ""
        digests = a2b_base64(blob) if rows else b""
        if len(digests) != 32 * len(rows):
            raise ProtocolError("malformed")
        codes = []
        for i in range(len(rows)):
            r = rows[i]
            if not isinstance(r, list) or len(r) != 3:
                raise ProtocolError("malformed")
            cid = _int(r[0])
            vf = _int(r[1])
            vu = _int(r[2])
            if cid <= 0 or vu <= vf:
                raise ProtocolError("malformed")
            codes.append((cid, digests[32 * i: 32 * i + 32], vf, vu))
        backup = obj.get("backup")
        if backup is not None:
            backup = a2b_base64(backup)
            if len(backup) != 32:
                raise ProtocolError("malformed")
        if rev < 0:
            raise ProtocolError("malformed")
        return rev, codes, backup
    except ProtocolError:
        raise
    except Exception:
        raise ProtocolError("malformed")


def parse_time(obj):
    try:
        now = _int(obj["now"])
        nonce = obj["nonce"]
        if not isinstance(nonce, str):
            raise ProtocolError("malformed")
        return now, nonce
    except ProtocolError:
        raise
    except Exception:
        raise ProtocolError("malformed")


def parse_logack(obj):
    try:
        return _int(obj["seq"])
    except ProtocolError:
        raise
    except Exception:
        raise ProtocolError("malformed")
