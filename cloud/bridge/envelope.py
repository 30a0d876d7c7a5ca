"""The signed envelope both ends speak (same as device/protocol.py), the `state` body, and the per-lock key cache."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import struct
import time
from typing import Callable, Optional

import sqlalchemy as sa

from ..domain import MAX_LIVE_CODES
from ..extensions import db
from ..sqlsets import among

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
    """Lock id -> Envelope, read from the database and trusted for TTL_S seconds, then read again.

    A lock's secret changes when it is decommissioned (random bytes nobody saw) and when its MAC is registered
    again (a new lock under the same id), while every bridge worker holds its own cache. So: the publisher puts
    the secret of each lock it publishes (read with the lock's row anyway), a signature that fails against an
    entry older than RECHECK_S is checked once more against the database (verify), and any other entry is read
    again after TTL_S. Unknown ids are remembered for UNKNOWN_S so a flood for a lock that does not exist costs
    no query each."""

    TTL_S = 30.0
    RECHECK_S = 2.0
    UNKNOWN_S = 5.0
    MAX_UNKNOWN = 10_000

    def __init__(self, on_change: Optional[Callable[[str], None]] = None):
        self._env: dict[str, tuple[bytes, Envelope, float]] = {}  # id -> (secret, envelope, read at)
        self._unknown: dict[str, float] = {}
        self._on_change = on_change  # told the id of a lock whose secret changed or that is gone

    def put(self, lock_id: str, secret: bytes) -> Envelope:
        """The lock's current secret, as just read from the database."""
        known = self._env.get(lock_id)
        if known is not None and known[0] == secret:
            env = known[1]
        else:
            env = Envelope(secret)
            if known is not None and self._on_change is not None:
                self._on_change(lock_id)  # another lock under this id now: what was cached of the old one goes
        self._env[lock_id] = (secret, env, time.monotonic())
        self._unknown.pop(lock_id, None)
        return env

    def forget(self, lock_id: str) -> None:
        if self._env.pop(lock_id, None) is not None and self._on_change is not None:
            self._on_change(lock_id)

    def _fresh(self, lock_id: str, now: float) -> Optional[Envelope]:
        known = self._env.get(lock_id)
        if known is not None and now - known[2] < self.TTL_S:
            return known[1]
        return None

    def load(self, lock_ids) -> None:
        """Read the secrets of the ids not known (or no longer fresh) in one query (a chunk of uplinks from locks
        first heard since the start: a storm after a restart would otherwise cost a query per lock)."""
        from ..models import Lock
        now = time.monotonic()
        want = [lid for lid in set(lock_ids) if self._fresh(lid, now) is None and lid not in self._unknown]
        if not want:
            return
        for lid, secret in db.session.execute(sa.select(Lock.id, Lock.secret).where(among(Lock.id, want))):
            self.put(lid, bytes(secret))

    def get(self, lock_id: str) -> Optional[Envelope]:
        now = time.monotonic()
        env = self._fresh(lock_id, now)
        if env is not None:
            return env
        t = self._unknown.get(lock_id)
        if t is not None and now - t < self.UNKNOWN_S:
            return None
        return self._read(lock_id)

    def recheck(self, lock_id: str) -> Optional[Envelope]:
        """After a signature failed: the lock's secret read again if the entry is older than RECHECK_S, returned
        only if it changed (None: same secret, too soon to ask, or the lock is gone)."""
        known = self._env.get(lock_id)
        if known is None or time.monotonic() - known[2] < self.RECHECK_S:
            return None
        env = self._read(lock_id)
        return env if env is not None and env is not known[1] else None

    def _read(self, lock_id: str) -> Optional[Envelope]:
        from ..models import Lock
        secret = db.session.scalar(sa.select(Lock.secret).where(Lock.id == lock_id))
        if secret is None:
            self.forget(lock_id)
            self._unknown[lock_id] = time.monotonic()
            if len(self._unknown) > self.MAX_UNKNOWN:
                self._unknown.clear()
            return None
        return self.put(lock_id, bytes(secret))
