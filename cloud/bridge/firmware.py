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

