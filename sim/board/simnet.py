"""Simulated network for the simulated board: the Wi-Fi station the link sees, and real-time idling.

- SimWLAN: the station interface the link sees through board.wlan(): isconnected()/connect()/active().
  `!net down` makes it report disconnected (the link drops its connection, like a lost access point);
  `!net up` brings it back. `!net hang SECONDS`: the next thread asking whether it is connected (the link's
  worker) blocks for SECONDS of real time, a network stack that stopped answering.
- Real-time idle: once the firmware has a network link, the world must keep living between input lines
  (the link's worker thread receives messages at any moment and the main loop must apply them). After an
  input line is done the board then polls stdin for a short real time instead of blocking, and lets the
  same amount of virtual time pass: the lock's clock runs like a real one while it waits for input.
"""
import select
import sys
import time

_STEP_MAX_MS = 50


class SimWLAN:
    def __init__(self) -> None:
        self.up = True
        self._active = True
        self.wait = 0  # ms the next isconnected() blocks (`!net hang`)

    def active(self, v=None):
        if v is None:
            return self._active
        self._active = bool(v)
        return None

    def isconnected(self) -> bool:
        if self.wait:
            ms, self.wait = self.wait, 0
            time.sleep_ms(ms)
        return self.up and self._active

    def connect(self, ssid=None, password=None) -> None:
        pass

    def disconnect(self) -> None:
        self.up = False

    def config(self, *a, **k):
        return b"\x00\x00\x00\x00\x00\x00"


wlan = SimWLAN()
realtime = False  # set by the link's start() through board.wlan() being asked for
_poller = None
_last = None


def command(args, emit) -> None:
    if args and args[0] == "hang":
        wlan.wait = int(float(args[1]) * 1000)
        emit({"event": "net", "state": "hang"})
        return
    if not args or args[0] not in ("up", "down"):
        raise ValueError("net up|down")
    wlan.up = args[0] == "up"
    emit({"event": "net", "state": args[0]})


def wait_line(world, timeout_ms: int = 20):
    """Real-time idle: return a stdin line if one arrives within timeout_ms, else None after letting the
    elapsed real time pass in the world (at most _STEP_MAX_MS per call)."""
    global _poller, _last
    if _poller is None:
        _poller = select.poll()
        _poller.register(sys.stdin, select.POLLIN)
    if _last is None:
        _last = time.ticks_ms()
    ev = _poller.poll(timeout_ms)
    now = time.ticks_ms()
    el = time.ticks_diff(now, _last)
    _last = now
    if el > 0:
        world.step(min(el, _STEP_MAX_MS))
    if ev:
        return sys.stdin.readline()
    return None

