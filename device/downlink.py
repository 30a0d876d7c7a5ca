"""Downlink payloads -> named messages (linkmsg), in the link's worker thread: size, signature, JSON, then the
parser registered for the message's type ("t"). Never raises: every drop comes back as a Refused message (the
session counts it under its reason), so a flood of forged messages costs a counter, not the session.

Memory: two boot-time buffers of MAX_DOWN bytes, one receiving (`rx`), the other held by the installed code
set. A state's code records are decoded in place in the receiving buffer (protocol.take_b64), so a full
200-code state allocates nothing large (the unix port's 64-bit heap at 128k is fragmented to ~7 KB blocks after
boot). When the main loop has installed it, that code set keeps (adopts) the buffer and the other one, whose
code set is garbage now, receives the next message (receiving); until then the session waits (wait_installed).
"""
import gc
import time

import protocol as P
from linkmsg import LogAck, Refused, State, Time


class Downlink:
    def __init__(self, env) -> None:
        self.env = env
        self._bufs = (bytearray(P.MAX_DOWN), bytearray(P.MAX_DOWN))
        self._held = -1      # index of the buffer the lock's code set holds (-1: none, e.g. after boot)
        self._staged = -1    # index of the buffer with records the main loop has not installed yet
        self.rx = self._bufs[0]
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
                rev, codes, backup = P.parse_state(obj, blob)
                msg = State(rev, codes, backup, (0 if rx is self._bufs[0] else 1) if blob is not None else -1)
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

    def wait_installed(self) -> None:
        """Worker thread, after handing over a State: wait until the main loop is through with it, so the next
        message is not received over records it may be installing."""
        while self._staged >= 0 and not self.stop:
            time.sleep_ms(5)

    def done(self, msg, adopted: bool) -> None:
        """Main loop: through with a State; its code set adopted msg.buf (-1: records of its own), or not."""
        if adopted:
            self._held = msg.buf
        self._staged = -1

    def receiving(self):
        """Worker thread, before each read: the buffer no code set holds (the client's rx_buf)."""
        self.rx = self._bufs[1 if self._held == 0 else 0]
        return self.rx


def _time(obj):
    return Time(*P.parse_time(obj))


def _logack(obj):
    return LogAck(P.parse_logack(obj))
