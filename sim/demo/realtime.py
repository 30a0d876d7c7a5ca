# Real-time mode of the simulated lock, for the demo (`make run`) and anything that talks to the lock over
# the network. Simulator only: never bundled for a real lock.
#
# The unchanged firmware (main.py) runs on the simulated board of sim/board/board.py, with two
# differences: the world's virtual clock follows the host's clock instead of a script on stdin, and the
# lock serves its virtual keypad page (keypad_page.py, microdot) on KEYPAD_PORT. The page presses keys
# through the board's fake matrix pins, so the firmware's real timer-driven scan path runs.
#
#   MICROPYPATH=.frozen:build/demo:build/sim:build/device SIMLOCK_DIR=DIR KEYPAD_PORT=8081 \
#       micropython -X heapsize=... -m realtime
import os
import time

import board as simboard
import exitcodes
import simwdt

_sleep_ms = getattr(time, "sleep_ms", None)
_ticks_ms = getattr(time, "ticks_ms", None)
_ticks_diff = getattr(time, "ticks_diff", None)


class RealtimeBoard(simboard.Board):
    def __init__(self, cfg):
        super().__init__(cfg)
        # the world's UTC now is the host's now at each boot
        self.world.epoch_ms = int(time.time() * 1000)
        self._last = _ticks_ms()
        self.page = None
        self.stepper = None
        # SETUP_PORT (the setup button held at power-up, the portal on loopback): see the simulated board

    def started(self, lock):
        super().started(lock)
        port = int(os.getenv("KEYPAD_PORT") or "0")
        if port:
            import portal
            from keypad_page import KeypadPage

            self.page = KeypadPage(self.down, self.up, self.state)
            self.stepper = portal.Stepper()
            self.stepper.start(self.page.serve(os.getenv("KEYPAD_HOST") or "127.0.0.1", port))
            simboard.emit({"event": "keypad_page", "url": "http://%s:%d/" % (os.getenv("KEYPAD_HOST") or "127.0.0.1",
                                                                             port)})

    # -- keys, for the virtual keypad page
    def down(self, key: str) -> None:
        self.world.pressed = simboard.KEYS.index(key)

    def up(self, key=None) -> None:
        self.world.pressed = -1

    def state(self):
        lock = self.lock
        on = self._on
        d = {"door": "open" if self.relay.level == on else "closed", "led": bool(self.led.level),
             "buzzer": bool(self.buzzer.level), "mac": lock.lock_id if lock else ""}
        if lock is not None:
            now = lock.ticks_ms()
            d["digits"] = lock.status()["digits"]
            d["locked_out_s"] = (lock.lockout.remaining_ms(now) + 999) // 1000
            d["trusted_time"] = lock.trusted_now() is not None
            d["codes"] = lock.codes.count
        return d

    def idle(self):
        # serve the page a step, let the host's time pass, then catch the world up with it
        if self.stepper is not None:
            self.stepper.poll()
        _sleep_ms(4)
        now = _ticks_ms()
        dt = _ticks_diff(now, self._last)
        if dt > 0:
            self._last = now
            self.world.step(dt)

    def crashed(self, exc):
        simboard.emit({"event": "crash", "error": repr(exc)})
        simwdt.reset(self, "crash", exitcodes.CRASH)


def run():
    simboard.Board = RealtimeBoard  # main.py builds board.Board(cfg): it gets this one
    import main
    main.main()


run()
