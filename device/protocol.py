"""Lock <-> cloud message envelope, version 1 (docs/protocol.md). Pure logic: no network, no hardware.

payload = hex(HMAC-SHA256(secret, b"KD1\\0" + topic + b"\\0" + body)) + body, body = compact JSON object.
The MAC covers the exact body bytes; the receiver verifies before parsing.
"""
import json
from binascii import a2b_base64, hexlify

from be32 import u32 as _u32
from hmac256 import Hmac256, equal

V = 1
PREFIX = b"KD1\x00"
SIG_LEN = 64
MAX_DOWN = 12288  # a full state (200 codes) is 11.9 KB; also holds its 8.8 KB of decoded records
MAX_UP = 4096
MAX_CODES = 200
LOG_BATCH = 16


class ProtocolError(Exception):
    """reason (args[0]) is one of: oversize, bad_signature, malformed, bad_version, unknown_type, wrong_topic."""


class Envelope:
    """Signs and opens messages for one lock. Holds the HMAC pads, never exposes the secret."""

    def __init__(self, secret, lock_id):
        self._hmac = Hmac256(bytes(secret))
        self.up = ("lock/%s/up" % lock_id).encode()
        self.down = ("lock/%s/down" % lock_id).encode()

    def mac(self, topic, body):
        h = self._hmac.start()
        h.update(PREFIX)
        h.update(topic)
        h.update(b"\x00")
        h.update(body)
        return self._hmac.finish(h)

    def seal_up(self, obj):
        """obj (dict) -> (hex MAC, body) for the uplink topic: the payload is their concatenation, handed to
        MQTTClient.publish as two parts so that it is never copied to join them."""
        body = json.dumps(obj).encode()
        if SIG_LEN + len(body) > MAX_UP:
            raise ProtocolError("oversize")
        return hexlify(self.mac(self.up, body)), body

    def verify(self, topic, payload, limit=MAX_DOWN):
        """Check size and signature of a payload received on topic; returns the body (a memoryview)."""
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
        return body

    def open(self, topic, payload, limit=MAX_DOWN):
        """Verify and parse a payload received on topic. Returns the body dict or raises ProtocolError."""
        return loads(self.verify(topic, payload, limit))


def loads(body):
    """A verified body -> dict (version checked)."""
    try:
        obj = json.loads(body)
    except MemoryError:
        raise
    except Exception:
        raise ProtocolError("malformed")
    if not isinstance(obj, dict):
        raise ProtocolError("malformed")
    if obj.get("v") != V:
        raise ProtocolError("bad_version")
    return obj


def take_b64(buf, start, end, key):
    """In a *verified* body held in the mutable buf[start:end]: decode the base64 string value of `key`
    (e.g. b'"c":"') in place, chunk by chunk (the decoded bytes trail the text they come from), then move the
    body's text before the value up against the value's closing quote, so that the body reads as valid JSON
    with that value empty and json.loads never allocates the long string.

    Returns (data_offset, data_length, body_offset): the decoded bytes are buf[data_offset:+data_length], the
    JSON is buf[body_offset:end]. None when the key is absent, the value is not base64, or it is too short to
    leave room for the moved text (a small value: the caller then parses normally)."""
    i = buf.find(key, start, end)
    if i < 0:
        return None
    a = i + len(key)
    j = buf.find(b'"', a, end)
    head = a - start
    if j < 0 or (j - a) % 4 or (j - a) - (j - a) // 4 * 3 < head:
        return None
    mv = memoryview(buf)
    o = 0
    step = 256  # base64 characters per chunk (a multiple of 4)
    for k in range(a, j, step):
        d = a2b_base64(mv[k: min(k + step, j)])
        buf[a + o: a + o + len(d)] = d
        o += len(d)
    b = j - head
    buf[b:j] = mv[start:a]  # the text up to and including `"c":"`, then the old closing quote and the rest
    return a, o, b


def _int(x):
    # bool is an int subclass in CPython; refuse it, and anything that isn't an int
    if not isinstance(x, int) or isinstance(x, bool):
        raise ProtocolError("malformed")
    return x


REC = 44  # one code on the wire: digest (32) | code id | valid_from | valid_until (u32 big endian each)


class CodeList:
    """The codes of a verified state: the decoded record blob, validated, not converted. Iterating yields
    (code_id, digest, valid_from, valid_until) with the digest a memoryview into the blob, so installing
    200 codes costs the blob (8.8 KB) and nothing per code (CodeSet.build takes any sized iterable).
    `home`: where the installed records go to live (the downlink's), so the blob's buffer receives again."""

    def __init__(self, blob, home=None):
        self.blob = blob
        # the records as they are: CodeSet.build takes them without copying (device/codes.py, same layout)
        self.records = blob
        self.home = home

    def __len__(self):
        return len(self.blob) // REC

    def __iter__(self):
        b = self.blob
        mv = memoryview(b)
        for o in range(0, len(b), REC):
            yield (_u32(b, o + 32), mv[o: o + 32], _u32(b, o + 36), _u32(b, o + 40))


def parse_state(obj, blob=None, home=None):
    """A verified "state" body -> (revision, CodeList, backup_digest|None). Validates everything first.
    blob: the records already decoded in place by take_b64 (then obj["c"] is ""); home: see CodeList."""
    try:
        rev = _int(obj["rev"])
        n = _int(obj["n"])
        if blob is None:
            c = obj.get("c") or ""
            obj["c"] = None  # the base64 text can go as soon as it is decoded
            blob = a2b_base64(c) if n else b""
            c = None

        if rev < 0 or n < 0 or n > MAX_CODES or len(blob) != n * REC:
            raise ProtocolError("malformed")
        for o in range(0, len(blob), REC):
            if _u32(blob, o + 32) == 0 or _u32(blob, o + 40) <= _u32(blob, o + 36):
                raise ProtocolError("malformed")
        backup = obj.get("backup")
        if backup is not None:
            backup = a2b_base64(backup)
            if len(backup) != 32:
                raise ProtocolError("malformed")
        return rev, CodeList(blob, home), backup
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
