"""The bridge's firmware-update uplinks (docs/ota.md): chunk requests answered from the release the lock is
targeted at, and the lock's update reports. Registered in the dispatch table like every uplink type."""
from __future__ import annotations

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



def announce_due(bridge) -> int:
    """Tell the online locks a new rollout targets (once per bridge process; a lock that is offline hears it
    after its next hello). Returns how many were told."""
    n = 0
    for lock_id, rollout_id, ann in rollout.due_announcements():
        if (lock_id, rollout_id) in bridge.fw_announced:
            continue
        bridge.fw_announced.add((lock_id, rollout_id))
        bridge.reply(lock_id, ann)
        bridge.metrics.add("fw_announced")
        n += 1
    return n
