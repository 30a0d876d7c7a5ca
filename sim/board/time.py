# The ESP32's ticks arithmetic for the simulated board: this module shadows the unix port's built-in `time` on
# the module path (the firmware's `from time import ticks_diff` gets it). ticks_diff works modulo the ESP32's
# period, 2**30, instead of the unix port's 2**62: a ticks value kept past 2**29 ms (6.2 days) reads as its
# opposite, as on a board. The tick counters themselves stay the built-in's (the unix port's asyncio keeps its
# task queue in them; ticks_diff is modular, so it does not matter that they are not reduced): the lock's own
# clock, the board's virtual ticks, wraps at 2**30 and starts 20 s before a wrap (sim/board/board.py).
from micropython import const


def _builtin():
    import sys

    p = sys.path
    sys.path = []  # an empty path imports the built-in module this one extends
    try:
        import time
    finally:
        sys.path = p
    return time


_t = _builtin()
_MASK = const(0x3FFFFFFF)  # the ESP32's period, 2**30, less one
_HALF = const(0x20000000)

sleep = _t.sleep
sleep_ms = _t.sleep_ms
sleep_us = _t.sleep_us
time = _t.time
time_ns = _t.time_ns
gmtime = _t.gmtime
localtime = _t.localtime
mktime = _t.mktime
ticks_ms = _t.ticks_ms
ticks_us = _t.ticks_us
ticks_cpu = _t.ticks_cpu
ticks_add = _t.ticks_add


def ticks_diff(a: int, b: int) -> int:
    return ((a - b + _HALF) & _MASK) - _HALF
