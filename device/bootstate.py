"""The boot state (boot.bin): which application slot boots, the last good one, and the trial of a new
version. Shared by the boot selector (boot.py) and the updater (ota.py); its JSON fields are a contract
between the selector a lock was installed with and every later version.

Slots: None is the factory application the installer put on the flash (the root on the ESP32); "a" and "b"
are the directories app/a and app/b an over-the-air update writes into. Saved with store.py (temp + rename +
checksum), so a power cut at any instant leaves the old or the new state.

Fields: slot, ver (what boots), good, good_ver (the fallback), trial, tries, stage (the trial's: staged,
checked, booting, running, then confirmed or no_ack as trial.py saw it; good, rolled_back), rollbacks, last (the
last rollback), pending (a downloaded release's manifest), refused (the last refusal), fetch (an announcement
the application recorded for the selector to accept: {"ann": body, "run": version})."""
import json

import store

NAME = "boot.bin"
ROOT = "app"
ARCHIVE = "fw.bin"  # a downloaded bundle; kept until the version it holds is confirmed (its self-check)


def load() -> dict:
    st = {"slot": None, "ver": None, "good": None, "good_ver": None, "trial": False, "tries": 0,
          "stage": None, "rollbacks": 0, "last": None, "pending": None, "refused": None, "fetch": None}
    st.update(store.load_dict(NAME) or {})
    return st


def save(st: dict) -> None:
    store.save(NAME, json.dumps(st).encode())


def slot_dir(slot) -> str:
    return ROOT + "/" + slot


def spare(st: dict) -> str:
    """The slot a new version is written into: never the running one nor the last good one."""
    for s in ("a", "b"):
        if s != st["slot"] and s != st["good"]:
            return s
    return "a"  # unreachable: two named slots, at most two in use


def stage(st: dict, slot: str, ver: str) -> None:
    """Boot slot (holding version ver) next, on trial; the running one stays the fallback."""
    if not st["trial"]:
        st["good"] = st["slot"]
        st["good_ver"] = st["ver"]
    st["slot"] = slot
    st["ver"] = ver
    st["trial"] = True
    st["tries"] = 0
    st["stage"] = "staged"


def confirm(st: dict) -> None:
    """The version on trial connected and got a signed answer: it is the new last good one."""
    st["good"] = st["slot"]
    st["good_ver"] = st["ver"]
    st["trial"] = False
    st["tries"] = 0
    st["stage"] = "good"


def rollback(st: dict, reason: str, boot=None) -> None:
    """Give up the version on trial: the last good slot boots again; the failure is kept for the report."""
    st["last"] = {"ver": st["ver"], "reason": reason, "boot": boot}
    st["slot"] = st["good"]
    st["ver"] = st["good_ver"]
    st["trial"] = False
    st["tries"] = 0
    st["stage"] = "rolled_back"
    st["rollbacks"] = int(st.get("rollbacks") or 0) + 1
