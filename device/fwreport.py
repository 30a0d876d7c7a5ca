"""Update reports (docs/ota.md, "Messages"): fwstatus to the cloud and "ota" events to the lock's listeners,
for ota.py, updater.py and trial.py; and what the boot selector decided, read from boot.bin, for ota.py to
tell at every connection. Not loaded on a lock that was never updated and has nothing to fetch."""
from version import VERSION


def report(svc, state: str, ver, **extra) -> None:
    """Tell the cloud (fwstatus, through svc.send) and the lock's listeners ("ota" events, shown by the
    simulator); svc is the Ota, the Updater or the Trial."""
    ev = {"state": state, "ver": ver}
    ev.update(extra)
    body = {"v": 1, "t": "fwstatus", "fw": VERSION}
    body.update(ev)
    svc.send(body)
    try:
        svc.lock.emit("ota", ev)
    except Exception:  # a listener's fault must not stop an update
        pass


def boot_decisions():
    """(the boot state when this boot is a new version's trial, else None; the report() arguments of the
    boot selector's decisions: a rollback, a refused release)."""
    from store import load_dict

    st = load_dict("boot.bin") or {}  # bootstate.NAME (bootstate.py stays unloaded: its names)
    tell = []
    last, refused = st.get("last"), st.get("refused")
    if last:
        tell.append({"state": "rolled_back", "ver": last["ver"], "reason": last["reason"],
                     "rollbacks": st.get("rollbacks")})
    if refused:
        tell.append({"state": "refused", "ver": refused["ver"], "reason": refused["reason"]})
    return (st if st.get("trial") else None), tell
