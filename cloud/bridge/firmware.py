"""The bridge's firmware-update uplinks (docs/ota.md): chunk requests answered from the release the lock is
targeted at, and the lock's update reports. Registered in the dispatch table like every uplink type."""
from __future__ import annotations

import time

from ..firmware import rollout
from .dispatch import uplink
from .envelope import is_int
from .uplink import Drop, Uplink


@uplink("fwget")
def on_fwget(bridge, up: Uplink) -> None:
    m = up.msg
    if not (isinstance(m.get("ver"), str) and is_int(m.get("off")) and is_int(m.get("len"))):
        raise Drop("malformed", up.lock_id)
    reply = rollout.chunk(up.lock_id, m["ver"], m["off"], m["len"])
    if reply is None:
        raise Drop("fw_not_targeted", up.lock_id)
    bridge.reply(up.lock_id, reply)


@uplink("fwstatus")
def on_fwstatus(bridge, up: Uplink) -> None:
    m = up.msg
    if not isinstance(m.get("state"), str) or not (m.get("ver") is None or isinstance(m.get("ver"), str)):
        raise Drop("malformed", up.lock_id)
    rollout.on_report(up.lock_id, m)



REANNOUNCE_S = 30.0  # an announcement nothing answered (lost with a session, no memory for it) is sent again


def announce_due(bridge, now: float | None = None) -> int:
    """Tell the online locks a rollout targets and that have not answered yet (no report since it was
    announced): at once for a new rollout, again every REANNOUNCE_S while the lock stays silent (a lock that is
    offline hears it after its next hello). Returns how many were told."""
    now = time.monotonic() if now is None else now
    n = 0
    for lock_id, rollout_id, ann in rollout.due_announcements():
        key = (lock_id, rollout_id)
        last = bridge.fw_announced.get(key)
        if last is not None and now - last < REANNOUNCE_S:
            continue
        bridge.fw_announced[key] = now
        bridge.reply(lock_id, ann)
        bridge.metrics.add("fw_announced")
        n += 1
    return n
