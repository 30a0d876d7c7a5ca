"""The first boot of a new version (docs/ota.md, "Trial and rollback"), loaded by ota.py only for that boot,
after the boot selector's self-check passed: the cloud's signed answer to this boot's hello confirms the
version; no answer within ota_confirm_minutes rolls it back to the last good one (the board restarts when the
door is idle). A lock on trial holds only this and the reports beside its link."""
from time import ticks_add, ticks_diff, ticks_ms

import bootstate
from fwreport import no_link, report
from version import VERSION

_CONFIRM_MIN = 10


class Trial:
    def __init__(self, lock, board, cfg: dict, boot: dict) -> None:
        self.lock = lock
        self.board = board
        self.send = no_link  # the link's send (ota.py sets it)
        m = cfg.get("ota_confirm_minutes")
        self.confirm_ms = (m if type(m) is int and 0 < m <= 1440 else _CONFIRM_MIN) * 60000
        self.boot = boot
        self.answered = False
        self.done = False
        self.reboot_due = None  # type: str | None
        self.t0 = ticks_ms()
        boot["stage"] = "running"  # reached the main loop: a crash from now on is not "at boot"
        bootstate.save(boot)

    def on_message(self, obj: dict) -> None:
        ver = obj.get("ver")
        if obj.get("t") == "fw" and isinstance(ver, str) and ver != VERSION:
            report(self, "refused", ver, reason="on_trial")  # one release at a time: this one first

    def on_link(self, data: dict) -> None:
        if data.get("state") == "connected":
            report(self, "trial", VERSION)
        elif data.get("ok") is True and "time" in data:
            self.answered = True  # the signed time answering this session's hello

    def poll(self, now) -> None:
        if not (self.done or self.reboot_due):
            self._check()
        if self.reboot_due and not self.lock.busy():
            self.board.reboot(self.reboot_due)

    def _check(self) -> None:
        if self.answered:
            bootstate.confirm(self.boot)
            bootstate.save(self.boot)
            try:
                import os

                os.remove(bootstate.ARCHIVE)
            except OSError:
                pass
            self.done = True
            report(self, "confirmed", VERSION)
        elif ticks_diff(ticks_ms(), ticks_add(self.t0, self.confirm_ms)) >= 0:
            self._roll_back("no_ack")

    def _roll_back(self, reason: str) -> None:
        bootstate.rollback(self.boot, reason, self.lock.boot_count)
        bootstate.save(self.boot)
        self.reboot_due = "rollback"

    def idle(self) -> bool:
        return self.done
