"""Relay (door strike) and buzzer/LED feedback drivers. Both take pin objects and are ticked from the same
periodic timer as the keypad, so the relay is released on time even when the main loop is busy."""
from micropython import const

from time import ticks_add, ticks_diff


class Relay:
    def __init__(self, pin, active_high: bool = True) -> None:
        self.pin = pin
        self._on = 1 if active_high else 0
        self.is_on = False
        self._until = 0
        self.off()

    def open(self, now_ms, ms: int) -> None:
        self._until = ticks_add(now_ms, ms)
        self.is_on = True
        self.pin.value(self._on)

    def off(self) -> None:
        self.is_on = False
        self.pin.value(1 - self._on)

    def tick(self, now_ms) -> None:
        if self.is_on and ticks_diff(now_ms, self._until) >= 0:
            self.off()


# Patterns: alternating on/off durations in ms, starting with "on" (buzzer and LED together), by the name the
# lock plays them by (one table: a module-level name per pattern would cost a name each on the lock's heap).
PATTERNS = {"accepted": (80, 60, 80), "refused": (500,), "locked_out": (60, 60, 60, 60, 60, 60, 60), "key": (15,)}


class Feedback:
    def __init__(self, buzzer, led) -> None:
        self.buzzer = buzzer
        self.led = led
        self._pat = ()  # type: tuple
        self._i = 0
        self._next = 0
        self._set(0)

    def _set(self, v: int) -> None:
        if self.buzzer is not None:
            self.buzzer.value(v)
        if self.led is not None:
            self.led.value(v)

    def play(self, pattern, now_ms) -> None:
        # tick() may run in between (timer interrupt): publish the pattern last
        self._pat = ()
        self._i = 0
        self._next = ticks_add(now_ms, pattern[0])
        self._set(1)
        self._pat = pattern

    @property
    def busy(self) -> bool:
        return bool(self._pat)

    def tick(self, now_ms) -> None:
        pat = self._pat
        if not pat or ticks_diff(now_ms, self._next) < 0:
            return
        i = self._i + 1
        if i >= len(pat):
            self._pat = ()
            self._set(0)
            return
        self._i = i
        self._next = ticks_add(self._next, pat[i])  # type: ignore
        self._set(0 if i & 1 else 1)
