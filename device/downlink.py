"""Downlink payloads -> named messages (linkmsg), in the link's worker thread: size, signature, JSON, then the
parser registered for the message's type ("t"). Never raises: every drop comes back as a Refused message (the
session counts it under its reason), so a flood of forged messages costs a counter, not the session.

Memory: the payload is (or is copied into) the boot-time receive buffer `rx`; a state's code records are
decoded from it into one of two boot-time staging buffers and blanked in place before json.loads, so a full
200-code state allocates nothing large (the unix port's 64-bit heap at 128k is fragmented to ~7 KB blocks
after boot). The code set installed by the main loop keeps (adopts) the buffer it was decoded into; the next
state is decoded into the other one.
"""
import gc
import time

import protocol as P
from linkmsg import LogAck, Refused, State, Time


class Downlink:
    def __init__(self, env) -> None:
        self.env = env
        self.rx = bytearray(P.MAX_DOWN)
        self._recbufs = (bytearray(P.MAX_CODES * P.REC), bytearray(P.MAX_CODES * P.REC))
        self._held = -1      # index of the buffer the lock's code set holds (-1: none, e.g. after boot)
        self._staged = -1    # index of the buffer with records the main loop has not installed yet
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
            free = -1
            if rx.find(b'"t":"state"', P.SIG_LEN, n) >= 0:
                free = self._staging_buffer()
                k = P.take_b64(rx, P.SIG_LEN, n, b'"c":"', self._recbufs[free])
                if k >= 0:
                    blob = memoryview(self._recbufs[free])[:k]
            obj = P.loads(body)
            body = None
            t = obj.get("t")
            if t == "state":
                rev, codes, backup = P.parse_state(obj, blob)
                msg = State(rev, codes, backup, free if blob is not None else -1)
                self._staged = msg.buf
                return msg
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

    def _staging_buffer(self) -> int:
        while self._staged >= 0 and not self.stop:  # the previous state is not installed yet
            time.sleep_ms(5)
        gc.collect()  # the old code set's buffers are garbage now: give the parse a clean heap
        return 1 if self._held == 0 else 0

    def done(self, msg, adopted: bool) -> None:
        """The main loop is through with a State: its code set adopted msg.buf, or not."""
        if adopted and msg.buf >= 0:
            self._held = msg.buf
        self._staged = -1


def _time(obj):
    return Time(*P.parse_time(obj))


def _logack(obj):
    return LogAck(P.parse_logack(obj))
