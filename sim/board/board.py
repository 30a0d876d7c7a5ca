"""Simulated board for the MicroPython unix port: same interface as device/board.py, which it shadows on the
module path (MICROPYPATH=.frozen:build/sim:build/device). The firmware does not know it is simulated.

The world it simulates: fake pins (a 4x3 matrix whose column levels follow the rows the firmware drives and
the key held down), a virtual clock (ticks and UTC epoch move together, only when the world says so), a
periodic virtual timer, an optional DS3231 on a virtual I2C bus, and a relay whose pin level is reported.

Input (stdin, one line at a time) and output (stdout, one JSON object per line) are documented in
docs/simulator.md. The world advances only while it works through an input line; when the line is done it
prints {"event": "settled"} and reads the next one, so drivers never need to sleep.

Environment: SIMLOCK_DIR (the simulated lock's directory; DIR/flash is its filesystem and the working
directory of the firmware, DIR/world.json the world outside the lock); SETUP_PORT (optional: power up with the
setup button held, the setup portal listening on 127.0.0.1 at that port).
"""
import gc
import json
import os
import sys

import exitcodes  # the exit codes that tell the host to power the board up again
import simnet  # the link's network seam (sim/board/simnet.py)
import simwdt  # the watchdog and the reset cause

_MASK = (1 << 30) - 1  # the ESP32's ticks period - 1 (sim/board/time.py makes ticks_diff modular in it too)
_START = 20000  # ticks start 20 s before they wrap: exercises the firmware's ticks arithmetic
KEYS = "123456789*0#"

_dir = os.getenv("SIMLOCK_DIR")
if _dir:
    os.chdir(_dir + "/flash")
    _dir = _dir


def emit(d) -> None:
    print(json.dumps(d))


def restart() -> None:
    """device/board.py's restart(): a planned reset before any Board exists (the boot selector), reported as a
    "reset" event like Board.reboot."""
    emit({"event": "reset", "reason": "update"})
    simwdt.reset_world(World(_dir + "/world.json" if _dir else None), "software", exitcodes.RESET)


class World:
    def __init__(self, path) -> None:
        self.path = path
        self.ms = 0  # virtual ms since this boot
        w = {}
        if path:
            try:
                with open(path) as f:
                    w = json.load(f)
            except (OSError, ValueError):
                w = {}
        self.w = w
        self.epoch_ms = int(w.get("epoch_ms", 1767225600000))  # world UTC at this boot
        self.pressed = -1
        self.timers = []  # [period, due, fn]
        self.hold_ms = 80
        self.gap_ms = 80
        self.settle_ms = 500

    def epoch(self) -> int:
        return (self.epoch_ms + self.ms) // 1000

    def save(self) -> None:
        if not self.path:
            return
        self.w["epoch_ms"] = self.epoch_ms + self.ms
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.w, f)
        os.rename(tmp, self.path)

    def ticks(self) -> int:
        return (self.ms - _START) & _MASK  # stays a small int: no allocation

    def step(self, ms: int) -> None:
        """Let ms of virtual time pass, firing the timers (once, for a long jump with no key held)."""
        target = self.ms + ms
        if ms > 50 and self.pressed < 0:
            self.ms = target
            for t in self.timers:
                t[1] = target + t[0]
                t[2]()
            return
        while True:
            due = target
            for t in self.timers:
                if t[1] < due:
                    due = t[1]
            self.ms = due
            for t in self.timers:
                if t[1] <= due:
                    t[1] += t[0]
                    t[2]()
            if due >= target:
                return


class SimPin:
    def __init__(self, level: int = 0, on_change=None) -> None:
        self.level = level
        self.on_change = on_change

    def value(self, v=None):
        if v is None:
            return self.level
        v = 1 if v else 0
        if v != self.level:
            self.level = v
            if self.on_change is not None:
                self.on_change(v)
        return None

    def on(self) -> None:
        self.value(1)

    def off(self) -> None:
        self.value(0)


class ColPin:
    """A keypad column input with pull-up: reads 0 while its key is held and its row is driven low."""

    def __init__(self, world, rows, col: int) -> None:
        self.world = world
        self.rows = rows
        self.col = col

    def value(self, v=None):
        k = self.world.pressed
        if k >= 0 and k % 3 == self.col and self.rows[k // 3].level == 0:
            return 0
        return 1


class Board:
    def __init__(self, cfg: dict) -> None:
        self.world = World(_dir + "/world.json" if _dir else None)
        self._on = 1 if cfg.get("relay_active_high", True) else 0
        self.relay = SimPin(1 - self._on, self._relay_changed)
        self.buzzer = SimPin(0)
        self.led = SimPin(0)
        self.rows = [SimPin(1) for _ in range(4)]
        self.cols = [ColPin(self.world, self.rows, c) for c in range(3)]
        self.ticks_ms = self.world.ticks
        self.reset_cause = simwdt.reset_cause(self.world)
        self._i2c = None  # the simulated RTC's bus, built when the firmware first asks for it
        self.lock = None
        self.on_relay = None  # optional hook (benchmarks)
        self._queue = []
        self._wait = 0
        self._ff = False
        self.interactive = _dir is not None
        self._settled = False
        # SETUP_PORT: the setup button is held at power-up; the setup portal then listens there on loopback,
        # and the board has an access point to open and close (reported as "ap" events)
        setup = int(os.getenv("SETUP_PORT") or "0")
        self.portal_addr = ("127.0.0.1", setup) if setup else None
        self._ap = False
        # the system clock (what mbedTLS would check certificate dates against): unset at every boot of the
        # simulated board, i.e. 2000-01-01 as an ESP32 after a power cut, until the firmware sets it
        self._sysclock = None  # the epoch it was set to, once set
        if setup:
            self.start_ap = self._start_ap  # only then: a board with an AP is one that needs Wi-Fi settings
        # a networked lock, or one serving its portal, keeps living between input lines (see simnet)
        m = cfg.get("mqtt") or {}
        simnet.realtime = self.interactive and (bool(m.get("host") or m.get("hosts")) or bool(setup))

    # -- board interface -----------------------------------------------------------------------------------
    def start_ticker(self, period_ms: int, fn) -> None:
        self.world.timers.append([period_ms, self.world.ms + period_ms, fn])

    def i2c(self):
        if self._i2c is None:
            if not self.world.w.get("rtc", False):
                return None  # no bus: nothing fitted (the RTC simulation stays off the heap)
            import simrtc

            self._i2c = simrtc.SimI2C(self.world)
        return self._i2c

    def relay_off(self) -> None:
        self.relay.value(1 - self._on)

    def setup_requested(self) -> bool:
        return self.portal_addr is not None

    def _start_ap(self, essid, password=None):
        self._ap = True
        emit({"event": "ap", "essid": essid})
        return "127.0.0.1"

    def stop_ap(self) -> None:
        if self._ap:
            self._ap = False
            emit({"event": "ap", "state": "off"})

    def started(self, lock) -> None:
        self.lock = lock
        lock.add_listener(self._event)
        if self.interactive:
            import version

            emit({"event": "ready", "lock_id": lock.lock_id, "version": version.VERSION,
                  "boot_count": lock.boot_count, "epoch": self.world.epoch(), "reset_cause": lock.reset_cause})

    def crashed(self, exc) -> None:
        emit({"event": "crash", "error": repr(exc)})
        simwdt.reset(self, "crash", exitcodes.CRASH)

    def reboot(self, reason: str) -> None:
        self.relay_off()
        emit({"event": "reset", "reason": reason})
        simwdt.reset(self, "software", exitcodes.RESET)

    def watchdog(self, timeout_ms: int):
        return simwdt.SimWDT(self, timeout_ms)

    def mac(self) -> str:
        return self.lock.lock_id if self.lock is not None else "000000000000"

    def wlan(self):
        return simnet.wlan

    def clock_ok(self) -> bool:
        return self._sysclock is not None

    def set_clock(self, epoch: int) -> None:
        self._sysclock = epoch

    def sntp(self, host: str) -> None:
        """A real SNTP query (UDP) to the simulated network's time server (sim/board/simsntp.py)."""
        import simsntp

        try:
            self._sysclock = simsntp.query(self.world.w, self.interactive and emit)
        finally:
            del sys.modules["simsntp"]  # the simulator's code shares the firmware's heap

    def _relay_changed(self, v: int) -> None:
        if self.on_relay is not None:
            self.on_relay(v)
        if self.interactive:
            emit({"event": "relay", "state": "open" if v == self._on else "closed"})

    def _event(self, event, data) -> None:
        if self.interactive:
            d = {"event": event}
            d.update(data)
            emit(d)

    # -- the world's script: one small step per main-loop iteration --------------------------------------
    def idle(self) -> None:
        if self._wait > 0:
            step = 5
            if self._ff and not self.lock.busy():
                step = 60000
            step = min(step, self._wait)
            self.world.step(step)
            self._wait -= step
            return
        self._ff = False
        if self._queue:
            self._queue.pop(0)()
            return
        if simnet.realtime:  # a networked lock: the world keeps living while it waits for input
            if not self._settled:
                self._settled = True
                emit({"event": "settled", "epoch": self.world.epoch(), "ms": self.world.ms})
            line = simnet.wait_line(self.world)
            if line is None:
                return
            self._settled = False
        else:
            emit({"event": "settled", "epoch": self.world.epoch(), "ms": self.world.ms})
            line = sys.stdin.readline()
        if not line:
            self.quit()
        try:
            self._line(line.strip())
        except (ValueError, IndexError, KeyError) as e:
            emit({"event": "error", "error": "bad input: %s (%r)" % (line.strip(), e)})
        except RuntimeError:
            raise

    def wait_for(self, ms: int, ff: bool = False) -> None:
        """Queue a wait of ms of virtual time (ff: fast-forward while the lock is not busy)."""
        def f():
            self._wait = ms
            self._ff = ff
        self._queue.append(f)

    def _key(self, k: int):
        """A key held down (k: its index in KEYS) or released (-1), then the hold or gap time."""
        def f():
            w = self.world
            w.pressed = k
            self._wait = w.w.get("hold_ms", w.hold_ms) if k >= 0 else w.w.get("gap_ms", w.gap_ms)
        return f

    def quit(self) -> None:
        self.world.save()
        sys.exit(0)

    def _line(self, line: str) -> None:
        if not line:
            return
        if not line.startswith("!"):  # keys: each pressed, held, released, then the settle time
            keys = line.replace(" ", "")
            for k in keys:
                if k not in KEYS:
                    raise ValueError("not a key: " + k)
            q = self._queue
            for k in keys:
                q.append(self._key(KEYS.index(k)))
                q.append(self._key(-1))
            self.wait_for(self.world.settle_ms)
            return
        gc.collect()  # the command's code comes onto the firmware's heap for this line: give it the whole of it
        try:
            import simcmd  # sim/board/simcmd.py

            simcmd.run(self, line)
        except MemoryError:
            # the simulator's own shortfall, not the firmware's: say so and carry on (the lock keeps running)
            emit({"event": "error", "error": "simulator: no memory for %s" % line.split()[0]})
        finally:
            sys.modules.pop("simcmd", None)
