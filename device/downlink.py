"""Downlink payloads -> named messages (linkmsg), in the link's worker thread: size, signature, JSON, then the
parser registered for the message's type ("t"). Never raises: every drop comes back as a Refused message (the
session counts it under its reason), so a flood of forged messages costs a counter, not the session.

Memory: two boot-time buffers, reserved while the heap is still in one piece: `rx` (MAX_DOWN bytes) receives,
and `home` (MAX_CODES records) is where the installed code set's records live. A state's records are decoded
in place in `rx` (protocol.take_b64), so a full 200-code state allocates nothing large (the unix port's 64-bit
heap at 128k is fragmented to a few KB per block after boot); the main loop validates them there, saves them
to flash, then copies them into `home` (device/codes.py, CodeSet.move_to). Until the main loop is through with
a state the worker waits (wait_installed) rather than receive over records it may be installing.

An update's boot (fetching a release, or a new version on trial: ota.update_boot()) receives into SMALL bytes
instead: its messages (a chunk, an announcement, the time) are under 1 KB, and the 10 KB it leaves free are
what the update's code needs at 128k. A state larger than that is dropped by the MQTT client unread; it stays
retained on the broker and arrives in the next boot, a normal one (the lock keeps its installed codes).
"""
import gc
import time

import protocol as P
from linkmsg import LogAck, Refused, State, Time

SMALL = 2048  # an update's boot's receiving buffer (bytes): a state of up to ~25 codes still fits


class Downlink:
    def __init__(self, env, small=False) -> None:
        self.env = env
        self.rx = bytearray(SMALL if small else P.MAX_DOWN)
        self.home = bytearray(P.MAX_CODES * P.REC)
        self._staged = False  # rx holds records the main loop has not installed yet
        self.stop = False    # set when the link stops: a parse waiting for the main loop gives up
        self._parsers = {"time": _time, "logack": _logack}

    def parser(self, t: str, fn) -> None:
        """Handle downlink type t with fn(verified body dict) -> message (raise P.ProtocolError to drop)."""
        self._parsers[t] = fn

    def parse(self, topic, payload, in_rx: bool):
        """A received payload (in_rx: it is a memoryview over self.rx) -> a message; never raises."""
        rx = self.rx
        try:
            if bytes(topic) != self.env.down:
                raise P.ProtocolError("wrong_topic")
            n = len(payload)
            if n > len(rx):
                raise P.ProtocolError("oversize")
            if not in_rx:
                rx[:n] = payload
            payload = None
            body = self.env.verify(self.env.down, memoryview(rx)[:n])
            blob = None
            if rx.find(b'"t":"state"', P.SIG_LEN, n) >= 0:
                gc.collect()  # the old code set's leftovers are garbage now: give the parse a clean heap
                r = P.take_b64(rx, P.SIG_LEN, n, b'"c":"')
                if r is not None:
                    blob = memoryview(rx)[r[0]: r[0] + r[1]]
                    body = memoryview(rx)[r[2]:n]
            obj = P.loads(body)
            body = None
            t = obj.get("t")
            if t == "state":
                rev, codes, backup = P.parse_state(obj, blob, self.home)
                self._staged = True
                return State(rev, codes, backup)
            fn = self._parsers.get(t)
            if fn is None:
                raise P.ProtocolError("unknown_type")
            return fn(obj)
        except P.ProtocolError as e:
            reason = e.args[0]
        except MemoryError:
            reason = "no_memory"  # refused like any bad message: the session goes on, nothing loops
        except Exception:
            reason = "malformed"
        obj = None
        gc.collect()
        return Refused(reason)

    def wait_installed(self) -> None:
        """Worker thread, after handing over a State: wait until the main loop is through with it, so the next
        message is not received over records it may be installing."""
        while self._staged and not self.stop:
            time.sleep_ms(5)

    def done(self) -> None:
        """Main loop: through with a State (installed, its records moved home, or refused): rx is free."""
        self._staged = False

    def receiving(self):
        """The receiving buffer, the client's rx_buf for the whole session (one buffer: the installed records
        live in `home`)."""
        return self.rx


def _time(obj):
    return Time(*P.parse_time(obj))


def _logack(obj):
    return LogAck(P.parse_logack(obj))
