"""The simulated board's watchdog and reset cause: machine.WDT on the world's virtual clock, `!hang`, and why
the board started (kept in world.json across the firmware process's restarts, as an ESP32 keeps it in its
reset-reason register and RTC memory); `!hang` is in simcmd.py. Names are few on purpose: each new one is
heap the firmware shares."""
import sys

import exitcodes


def reset_cause(world) -> str:
    """Why this boot happened; the world forgets it at once (a power cut later is a power-up again)."""
    c = world.w.pop("reset_cause", None)
    if c is None:
        return "power_on"
    world.save()
    return c


def reset(board, reason: str, code: int) -> None:
    """The chip resets for reason: its outputs float (the relay is released) and the firmware process ends
    with code (exitcodes), which tells the host to power it up again. Nothing is imported on this path: a
    crash may come from a full heap."""
    board.relay_off()
    reset_world(board.world, reason, code)


def reset_world(world, reason: str, code: int) -> None:
    """The reset itself: the next boot reads reason (reset_cause), the process ends with code. Also the boot
    selector's restart, before any Board (and relay) exists (board.restart)."""
    world.w["reset_cause"] = reason
    world.save()
    sys.exit(code)


class SimWDT:
    """Once started it must be fed every timeout_ms of virtual time, or it resets the board. A fast-forward
    (`!advance`: the main loop spinning idle) feeds it; `!hang` and `!busy` do not. Its state is its timer
    entry in the world: [period = the timeout, due = the deadline, fn = self, when it was fed]."""

    def __init__(self, board, timeout_ms: int) -> None:
        self.board = board
        self.t = [timeout_ms, 0, self, 0]
        self.feed()
        board.world.timers.append(self.t)

    def feed(self) -> None:
        t = self.t
        t[3] = self.board.world.ms
        t[1] = t[3] + t[0]

    def __call__(self) -> None:
        b = self.board
        t = self.t
        ms = b.world.ms
        if ms - t[3] < t[0] or b._ff:
            if ms - t[3] >= t[0]:
                self.feed()
            t[1] = t[3] + t[0]  # a long step of the world may have moved it on
            return
        b.relay_off()
        print('{"event": "reset", "reason": "watchdog", "unfed_ms": %d}' % (ms - t[3]))
        reset(b, "watchdog", exitcodes.RESET)
