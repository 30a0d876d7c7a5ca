"""The ESP32 board: the only module that imports machine / network. Everything else gets pins and buses
from here. On the host, sim/board/board.py (same interface) shadows this module on the path.

Interface used by main.py and lock.py:
  Board(cfg)            pins from cfg["pins"]; the relay pin is driven released before anything else
  .rows .cols           keypad pins (rows: outputs idle high; cols: inputs with pull-ups)
  .relay .buzzer .led   output pins
  .ticks_ms()           millisecond ticks (time.ticks_ms)
  .start_ticker(ms, fn) call fn() every ms from a timer interrupt (fn must not allocate)
  .i2c()                the RTC's I2C bus, or None
  .idle()               let a few ms pass in the main loop
  .relay_off()          force the relay released (crash path)
  .setup_requested()    True when the setup button is held
  .started(lock)        the lock is up and accepting keys
  .crashed(exc)         the master exception handler's last word: reset the chip
  .reboot(reason)       a planned reset (firmware update: "update", "rollback"), relay released first
  .wlan()               the station interface, for the link (activated on first use)
  .start_ap(essid, pw)  open the setup access point (portal), returns its IP
  .stop_ap()            close it again (the portal's setup window is over)
  .mac()                the station MAC as 12 lowercase hex digits (the lock id)
  .clock_ok()           the system clock was set since power-up (before, it reads 2000-01-01)
  .set_clock(epoch)     set the system clock (UNIX epoch seconds): from the RTC or the cloud's signed time
  .sntp(host)           set the system clock by SNTP (ntptime); OSError when nobody answers
  .watchdog(timeout_ms) start the hardware watchdog (machine.WDT, it cannot be stopped); returns it (.feed())
  .reset_cause          why the chip started: "power_on", "watchdog", "crash", "software" (board.reboot), "hard"
And one function: restart(), the boot selector's planned reset before any Board exists (nothing driven yet).
"""
import time

import machine
import network
from machine import I2C, Pin, Timer

_PLANNED = b"reboot"


def restart() -> None:
    """A planned reset before the Board exists (the boot selector, between an update's install and its trial):
    no pin has been driven, the relay is released; the next boot reads "software"."""
    machine.RTC().memory(_PLANNED)
    machine.reset()


class Board:
    def __init__(self, cfg: dict) -> None:
        pins = cfg["pins"]
        on = 1 if cfg.get("relay_active_high", True) else 0
        self._relay_off_level = 1 - on
        # relay first: released at boot, whatever happened before
        self.relay = Pin(pins["relay"], Pin.OUT, value=self._relay_off_level)
        self.buzzer = Pin(pins["buzzer"], Pin.OUT, value=0)
        self.led = Pin(pins["led"], Pin.OUT, value=0)
        self.rows = [Pin(p, Pin.OUT, value=1) for p in pins["rows"]]
        self.cols = [Pin(p, Pin.IN, Pin.PULL_UP) for p in pins["cols"]]
        self._button = Pin(pins["button"], Pin.IN, Pin.PULL_UP)
        self._sda = pins["sda"]
        self._scl = pins["scl"]
        self._i2c = None  # type: I2C | None
        self._timer = None  # type: Timer | None
        self._wlan = None  # type: network.WLAN | None
        self._ap = None  # type: network.WLAN | None
        self.ticks_ms = time.ticks_ms
        self.reset_cause = _reset_cause()

    def start_ticker(self, period_ms: int, fn) -> None:
        t = Timer(0)
        cb = lambda _t: fn()  # noqa: E731  (created once; calling it does not allocate)
        try:
            t.init(period=period_ms, mode=Timer.PERIODIC, callback=cb, hard=True)
        except (TypeError, ValueError):
            t.init(period=period_ms, mode=Timer.PERIODIC, callback=cb)
        self._timer = t

    def i2c(self):
        if self._i2c is None:
            try:
                self._i2c = I2C(0, scl=Pin(self._scl), sda=Pin(self._sda), freq=100000)
            except (OSError, ValueError):
                return None
        return self._i2c

    def idle(self) -> None:
        time.sleep_ms(10)

    def relay_off(self) -> None:
        self.relay.value(self._relay_off_level)

    def setup_requested(self) -> bool:
        return self._button.value() == 0

    def started(self, lock) -> None:
        pass

    def crashed(self, exc) -> None:
        self.relay_off()
        if self._timer is not None:
            self._timer.deinit()
        time.sleep_ms(2000)
        machine.reset()  # no mark in RTC memory: the next boot reads "crash"

    def reboot(self, reason: str) -> None:
        """A planned restart (an update switching slots, or rolling one back): relay released, then reset."""
        self.relay_off()
        if self._timer is not None:
            self._timer.deinit()
        machine.RTC().memory(_PLANNED)  # RTC memory survives a reset, not a power cut
        machine.reset()

    def watchdog(self, timeout_ms: int):
        return machine.WDT(id=0, timeout=timeout_ms)


    def wlan(self):
        if self._wlan is None:
            w = network.WLAN(network.WLAN.IF_STA)
            w.active(True)
            self._wlan = w
        return self._wlan

    def start_ap(self, essid: str, password=None):
        """Open the setup access point; returns its IP address."""
        ap = network.WLAN(network.WLAN.IF_AP)
        self._ap = ap
        ap.active(True)
        if password:
            ap.config(essid=essid, password=password, security=3)
        else:
            ap.config(essid=essid, security=0)
        return ap.ifconfig()[0]

    def stop_ap(self) -> None:
        """Close the setup access point (stations connected to it are dropped)."""
        if self._ap is not None:
            self._ap.active(False)
            self._ap = None

    def mac(self) -> str:
        return "".join("%02x" % b for b in self.wlan().config("mac"))

    # -- the system clock: what mbedTLS checks certificate dates against ------------------------------------
    def clock_ok(self) -> bool:
        return time.gmtime()[0] >= 2025

    def set_clock(self, epoch: int) -> None:
        # this port's time functions count from 2000 or from 1970 depending on the build
        t = time.gmtime(epoch - (946684800 if time.gmtime(0)[0] == 2000 else 0))
        machine.RTC().datetime((t[0], t[1], t[2], t[6], t[3], t[4], t[5], 0))

    def sntp(self, host: str) -> None:
        import ntptime

        ntptime.host = host
        ntptime.timeout = 2
        ntptime.settime()


def _reset_cause() -> str:
    """machine.reset_cause() in words. The ESP32 reports a planned machine.reset() and a crash (the master
    handler's reset, or a panic) alike as SOFT_RESET: reboot() marks the planned one in RTC memory."""
    rtc = machine.RTC()
    planned = rtc.memory() == _PLANNED
    rtc.memory(b"")
    c = machine.reset_cause()
    if c == machine.SOFT_RESET:
        return "software" if planned else "crash"
    if c == machine.WDT_RESET:
        return "watchdog"
    if c == machine.HARD_RESET:
        return "hard"
    return "power_on"  # PWRON_RESET (brown-outs included) and anything unknown
