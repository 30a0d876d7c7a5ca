"""Firmware updates, the part that stays loaded (docs/ota.md): plugs the update messages into the link, tells
the cloud what the boot selector decided (a rollback, a refused release) at every connection, and loads the
rest only in the boots that have work: updater.py in a fetching boot, trial.py in a new version's first boot.

A release announced to a normal boot is not fetched there: the announcement is recorded in the boot state
and the lock restarts (when the door is idle); the boot selector applies the release's rules in a boot of its
own and writes the fetch job, and the next boot fetches. At 128k a normal boot's link leaves the rest of the
firmware a few KB of heap, and its names fill the name pools the board has (docs/ota.md "Memory"): a fetching
or trial boot gives its link a small receiving buffer (update_boot()), which makes the room."""
from micropython import const

import json

from store import exists, load_dict, put, remove, save
from version import VERSION

_BOOTS = const(3)  # fetching boots in a row without a chunk (a crash, a watchdog reset): the fetch is dropped


def update_boot() -> bool:
    """Before the link starts: whether this boot fetches a release or runs a new version on trial. Such a boot's
    link gets a small receiving buffer (its messages are small; a large code set waits, retained, for the next
    normal boot). A fetch that went _BOOTS boots without a chunk is refused here ("no_progress"): a fetching
    boot that keeps crashing or cannot find the memory for its work never loops."""
    st = load_dict("boot.bin") or {}
    job = load_dict("ota.bin")
    if job is not None and (st.get("trial") or st.get("pending") or type(job.get("boots")) is not int):
        job = None  # finished (a cut before it was removed), superseded, or not a job of this firmware
    if job is None:
        remove("ota.bin")
        return bool(st.get("trial"))
    if job["boots"] >= _BOOTS:
        put("boot.bin", "refused", {"ver": job.get("ver"), "reason": "no_progress"})
        remove("ota.bin")
        remove("fw.bin")
        return False
    job["boots"] += 1
    save("ota.bin", json.dumps(job).encode())
    return True


class Msg:
    """A verified-by-HMAC "fw" or "fwchunk" body, handed from the link's worker to the main loop."""

    def __init__(self, obj) -> None:
        self.obj = obj


class Ota:
    def __init__(self, lock, board, cfg: dict) -> None:
        self.lock = lock
        self.board = board
        self.send = None  # the link's send, once attached
        self.connected = False
        self.u = None  # the Updater or the Trial, in the boots that have one
        self.tell = ()  # type: tuple | list  # the boot selector's decisions (fwreport.report() arguments), told at every connection
        self.due = False  # an announcement was recorded: restart (once the door is idle) to fetch it
        trial = None
        if exists("boot.bin"):
            import fwreport

            trial, self.tell = fwreport.boot_decisions()
        if trial is not None:
            from trial import Trial

            self.u = Trial(lock, board, cfg)
        elif exists("ota.bin"):
            from updater import Updater

            self.u = Updater(lock, board, cfg)  # type: ignore[assignment]  # same four methods as Trial
        elif not self.tell:
            import sys

            sys.modules.pop("fwreport", None)  # nothing to tell: its heap goes back

    def attach(self, link) -> None:
        """The two downlink types (parsed in the link's worker thread), their handler on the main loop, the
        link's send, and its events (connected, offline, the signed time answering the hello)."""
        dl = link.session.downlink
        dl.parser("fw", Msg)
        dl.parser("fwchunk", Msg)
        link.handle(Msg, self._on_msg)
        self.send = link.send
        if self.u is not None:
            self.u.send = link.send
        self.lock.add_listener(self._on_event)

    def _on_msg(self, msg, now) -> None:
        obj = msg.obj
        if self.u is not None:
            self.u.on_message(obj)
            return
        ver = obj.get("ver")
        if obj.get("t") != "fw" or not isinstance(ver, str) or ver == VERSION or self.due:
            return
        for ev in self.tell:
            if ev["ver"] == ver:  # refused or rolled back here: told at every connection, not fetched again
                from fwreport import report

                report(self, "refused", ver, reason="failed_before")
                return
        # for the boot selector (bootinstall.py): the release's rules, then the fetching boot
        put("boot.bin", "fetch", {"ann": obj, "run": VERSION})
        self.due = True

    def _on_event(self, event: str, data: dict) -> None:
        if event == "link":
            st = data.get("state")
            if st is not None:
                self.connected = st == "connected"
            if st == "connected":
                # at every connection, not once: a report queued just before a session ends is lost with it
                # (the cloud counts a rollback once)
                if self.tell:
                    from fwreport import report

                    for ev in self.tell:
                        report(self, **ev)
            if self.u is not None:
                self.u.on_link(data)

    def poll(self, now) -> None:
        if self.u is not None:
            self.u.poll(now)
        elif self.due and not self.lock.busy():
            self.board.reboot("update")
