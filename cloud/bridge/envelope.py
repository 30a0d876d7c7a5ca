"""The signed envelope both ends speak (same as device/protocol.py), the `state` body, and the per-lock key cache."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import struct
import time
from typing import Optional

import sqlalchemy as sa

from ..domain import MAX_LIVE_CODES
from ..extensions import db

V = 1
PREFIX = b"KD1\x00"
SIG_LEN = 64
MAX_UP = 4096
MAX_DOWN = 12288  # a full state (200 codes) is 11.9 KB
MAX_CODES = MAX_LIVE_CODES  # the protocol's limit; generate_code refuses beyond it


class Envelope:
    """HMAC-SHA256(secret, b"KD1\\0" + topic + b"\\0" + body); payload = hex(mac) + body."""

    __slots__ = ("_base",)

    def __init__(self, secret: bytes):
        self._base = hmac.new(secret, PREFIX, hashlib.sha256)

    def mac(self, topic: bytes, body: bytes) -> bytes:
        h = self._base.copy()
        h.update(topic)
        h.update(b"\x00")
        h.update(body)
        return h.digest()

    def seal(self, topic: str, obj: dict) -> bytes:
        body = json.dumps(obj, separators=(",", ":")).encode()
        return self.mac(topic.encode(), body).hex().encode() + body

    def open(self, topic: str, payload: bytes) -> dict:
        """Raises ValueError(reason) for: malformed, bad_signature, bad_version."""
        if len(payload) < SIG_LEN + 2:
            raise ValueError("malformed")
        body = payload[SIG_LEN:]
        try:
            sig = bytes.fromhex(payload[:SIG_LEN].decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raise ValueError("malformed")
        if not hmac.compare_digest(sig, self.mac(topic.encode(), body)):
            raise ValueError("bad_signature")
        try:
            obj = json.loads(body)
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise ValueError("malformed")
        if not isinstance(obj, dict):
            raise ValueError("malformed")
        if obj.get("v") != V:
            raise ValueError("bad_version")
        return obj


def encode_state(state: dict) -> dict:
    """domain.desired_state() → the `state` body (digests packed in one base64 string)."""
    codes = state["codes"]
    if len(codes) > MAX_CODES:
        raise ValueError(f"{len(codes)} codes exceed the protocol's {MAX_CODES}")
    recs = b"".join(struct.pack(">32sIII", c["digest"], int(c["id"]), int(c["from"]), int(c["until"]))
                    for c in codes)
    return {
        "v": V, "t": "state", "rev": int(state["revision"]),
        "n": len(codes), "c": base64.b64encode(recs).decode(),
        "backup": base64.b64encode(state["backup_digest"]).decode() if state.get("backup_digest") else None,
    }


def is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


class Keyring:
    """Lock id → Envelope, loaded from the database once per lock; unknown ids are remembered for 5 s so a
    flood of messages for a lock that does not exist costs no query each."""

    def __init__(self):
        self._env: dict[str, Envelope] = {}
        self._unknown: dict[str, float] = {}

    def load(self, lock_ids) -> None:
        """Load the secrets of the ids not known yet in one query (a chunk of uplinks from locks first heard
        since the start: a storm after a restart would otherwise cost a query per lock)."""
        from ..models import Lock
        want = [lid for lid in set(lock_ids) if lid not in self._env and lid not in self._unknown]
        if not want:
            return
        for lid, secret in db.session.execute(sa.select(Lock.id, Lock.secret).where(Lock.id.in_(want))):
            self._env[lid] = Envelope(bytes(secret))

    def get(self, lock_id: str) -> Optional[Envelope]:
        env = self._env.get(lock_id)
        if env is not None:
            return env
        t = self._unknown.get(lock_id)
        if t is not None and time.monotonic() - t < 5.0:
            return None
        from ..models import Lock
        secret = db.session.scalar(sa.select(Lock.secret).where(Lock.id == lock_id))
        if secret is None:
            self._unknown[lock_id] = time.monotonic()
            if len(self._unknown) > 10_000:
                self._unknown.clear()
            return None
        env = self._env[lock_id] = Envelope(bytes(secret))
        return env
