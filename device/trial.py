"""The first boot of a new version (docs/ota.md, "Trial and rollback"), loaded by ota.py only for that boot,
after the boot selector's self-check passed. It watches and reports; the selector decides. The cloud's signed
answer to this boot's hello marks the version "confirmed"; no answer within ota_confirm_minutes marks it
"no_ack". Either way the board restarts when the door is idle and the selector, at that boot, confirms it as
the last good version or rolls it back (bootinstall.py): its boot-state rules stay out of this boot, whose
names already fill the pools, and so does a second copy of them. A lock on trial holds only this and the
reports beside its link (its receiving buffer the small one, ota.update_boot())."""
from time import ticks_add, ticks_diff, ticks_ms

from micropython import const

import store
from fwreport import report
from version import VERSION

_CONFIRM_MIN = const(10)
_GRACE_MS = const(2000)  # the last report's time to leave before the restart


class Trial:
    def __init__(self, lock, board, cfg: dict) -> None:
        self.lock = lock
        self.board = board
        self.send = lambda obj: False  # the link's send (ota.py sets it)
        m = cfg.get("ota_confirm_minutes")
        self.confirm_ms = (m if type(m) is int and 0 < m <= 1440 else _CONFIRM_MIN) * 60000
        self.answered = False
        self.reboot_due = None  # type: str | None  # why the board restarts, once the door is idle ...
        self.due_at = ticks_ms()  # ... and this time has come
        self.t0 = ticks_ms()
        store.put("boot.bin", "stage", "running")  # reached the main loop: a crash from now on is not "at boot"

    def on_message(self, obj: dict) -> None:
        """One release at a time: another one announced now is left unanswered (not refused: the cloud
        announces it again to the next boot's hello, a normal one that takes it)."""

    def on_link(self, data: dict) -> None:
        if data.get("state") == "connected":
            report(self, "trial", VERSION)
        elif data.get("ok") is True and "time" in data:
            self.answered = True  # the signed time answering this session's hello

    def poll(self, now) -> None:
        t = ticks_ms()
        if self.reboot_due is not None:
            if ticks_diff(t, self.due_at) >= 0 and not self.lock.busy():
                self.board.reboot(self.reboot_due)
        elif self.answered:
            self._end("confirmed", "update")
            report(self, "confirmed", VERSION)
        elif ticks_diff(t, ticks_add(self.t0, self.confirm_ms)) >= 0:
            self._end("no_ack", "rollback")

    def _end(self, stage: str, why: str) -> None:
        """The trial's outcome, for the selector at the next boot (bootinstall.decide); the restart is due."""
        store.put("boot.bin", "stage", stage)
        self.reboot_due = why
        self.due_at = ticks_add(ticks_ms(), _GRACE_MS)
