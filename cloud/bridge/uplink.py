"""Verification of one uplink message: topic, size, known lock, signature, version, type, counter field."""
from __future__ import annotations

import logging
from dataclasses import dataclass

from .envelope import MAX_UP, Keyring, is_int


class Drop(Exception):
    """An uplink refused for `reason` (a counter name in the bridge's metrics, docs/protocol.md)."""

    def __init__(self, reason: str, lock_id: str = "?", level: int = logging.WARNING):
        super().__init__(reason)
        self.reason, self.lock_id, self.level = reason, lock_id, level


@dataclass(slots=True)
class Uplink:
    """A verified uplink: signature checked, `t` a known type, `n` a plausible counter (not yet compared)."""
    lock_id: str
    topic: str
    t: str
    n: int
    msg: dict


def verify(topic: str, payload: bytes, keyring: Keyring, known_types) -> Uplink:
    """Raises Drop(reason) for anything that is not a signed, well-formed uplink of a known type."""
    parts = topic.split("/")
    if len(parts) != 3 or parts[0] != "lock" or parts[2] != "up" or not parts[1]:
        raise Drop("malformed")
    lock_id = parts[1]
    if len(payload) > MAX_UP:
        raise Drop("oversize", lock_id)
    env = keyring.get(lock_id)
    if env is None:
        raise Drop("unknown_lock", lock_id)
    try:
        msg = env.open(topic, payload)
    except ValueError as exc:
        # the lock may have a new secret since this worker read it (its MAC registered again): asked once
        newer = keyring.recheck(lock_id) if str(exc) == "bad_signature" else None
        if newer is None:
            raise Drop(str(exc), lock_id)
        try:
            msg = newer.open(topic, payload)
        except ValueError as exc2:
            raise Drop(str(exc2), lock_id)
    t, n = msg.get("t"), msg.get("n")
    if t not in known_types:
        raise Drop("unknown_type", lock_id)
    if not is_int(n) or n <= 0 or n >= 2 ** 62:
        raise Drop("malformed", lock_id)
    return Uplink(lock_id, topic, t, n, msg)
