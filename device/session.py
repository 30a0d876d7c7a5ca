"""The link's session (connectivity, like mqtt_as's MQTT_base): a worker thread owns Wi-Fi, TLS, the MQTT
client (device/mqtt.py), connect with a signed last will, failover between the configured brokers, keepalive,
reconnect backoff with full jitter, and publishing. It may block (a hanging connect, a TLS handshake, a broker
that stops answering): the main loop never waits for it. The two sides exchange named messages (linkmsg)
through two bounded lists guarded by a _thread lock (the unix port has no GIL).

The session knows nothing of what the messages mean: that is the policy's (link.py)."""
import _thread
import gc
import select
import time
from time import ticks_diff, ticks_ms

from micropython import const

import protocol as P
import store
from backoff import ceiling, jitter
from linkmsg import Down, Refused, State, Up
from mqtt import MQTTClient

_KEEPALIVE = const(30)         # seconds announced to the broker
_PING_MS = const(15000)
_DEAD_MS = const(45000)
_CONNECT_TIMEOUT = const(10)   # seconds, socket timeout for connect and blocking reads
_BACKOFF_FIRST_MS = const(1000)
_BACKOFF_MAX_MS = const(60000)
_NEXT_HOST_MS = const(200)     # pause before trying the next broker of the list
_INQ = const(8)                # downlink messages waiting for the main loop
_INQ_REFUSED = const(4)        # a refusal is not queued behind more than this: a flood leaves room for a state
_INQ_CONTROL = const(2)        # slots beyond _INQ for Up/Down: a full queue never hides a connection change
_OUTQ = const(16)
_STEP = const(64)  # counter values per persisted high-water mark


def brokers(m: dict) -> list:
    """mqtt.hosts (a list of "host" or "host:port"), else mqtt.host, as [(host, port)]; the port defaults to
    mqtt.port, else 8883 with TLS and 1883 without."""
    port = int(m.get("port") or (8883 if m.get("tls") else 1883))
    out = []
    for h in m.get("hosts") or [m.get("host") or "127.0.0.1"]:
        h = str(h)
        i = h.rfind(":")
        out.append((h[:i], int(h[i + 1:])) if i > 0 else (h, port))
    return out


def _der(data):
    """The first certificate of a PEM file -> DER (mbedTLS wants PEM NUL-terminated; DER avoids the question)."""
    if not data.startswith(b"-----BEGIN"):
        return data
    from binascii import a2b_base64
    end = data.find(b"-----END")
    body = b"".join(ln.strip() for ln in data[:end].split(b"\n") if ln.strip() and not ln.startswith(b"-----"))
    return a2b_base64(body)


class Session:
    def __init__(self, cfg: dict, board, lock_id: str, env, downlink, trusted_now) -> None:
        m = cfg["mqtt"]
        self.board = board
        self.env = env
        self.hosts = brokers(m)
        self.tls = bool(m.get("tls", False))
        self.user = m.get("username") or lock_id
        self.password = m.get("password")
        self.client_id = "kd-" + lock_id
        self.wifi = cfg.get("wifi") or {}
        self.ntp = cfg.get("ntp_host") or "pool.ntp.org"
        self._trusted_now = trusted_now  # the lock's trusted time (RTC, cloud), None when it has none
        self._mu = _thread.allocate_lock()
        self._inq = []  # type: list
        self._outq = []  # type: list
        self._stop = False
        self._started = False
        self.counts = {}  # type: dict
        self.connected = False   # single words written by the worker, read by the main loop
        self.last_error = None  # type: str | None
        self.host = None  # type: str | None  # the broker of the current session
        # the CA is read and decoded at boot: once sessions have come and gone the heap is too fragmented
        # for the ~1 KB of an RSA certificate; a lock configured for TLS without a CA never connects
        self._ca = None
        self._ctx = None  # type: object
        self._refusal = None
        if self.tls:
            try:
                with open(m["ca"], "rb") as f:
                    self._ca = _der(f.read())
            except (KeyError, TypeError, OSError, ValueError):
                self._refusal = "tls: no CA certificate (set mqtt.ca to the broker CA's file)"
        self.counter = UpCounter()
        self.downlink = downlink
        self._client = None  # type: MQTTClient | None
        self._rx_at = ticks_ms()  # when the broker last sent something
        # real ticks of the worker's last sign of life (each pass of its loops, each step of a back-off);
        # None until it runs. The main loop's watchdog policy reads it (main.py, Link.worker_stuck)
        self.beat = None  # type: object

    # ---------------------------------------------------------------- both threads
    def count(self, what: str) -> None:
        self._mu.acquire()
        self.counts[what] = self.counts.get(what, 0) + 1
        self._mu.release()

    # put, pop and sleep are the worker's and the main loop's own helpers, not an API: named as the
    # interpreter's built-in names are, which cost no heap (a private name would cost one each on the lock)
    def put(self, q, item, cap: int) -> bool:
        self._mu.acquire()
        try:
            if len(q) >= cap:
                return False
            q.append(item)
            return True
        finally:
            self._mu.release()

    def pop(self, q):
        self._mu.acquire()
        try:
            return q.pop(0) if q else None
        finally:
            self._mu.release()

    # ---------------------------------------------------------------- main loop side
    def send(self, obj: dict) -> bool:
        """Queue an uplink body (sealed with the next counter value when it is published)."""
        if not self.connected:
            return False
        if not self.put(self._outq, obj, _OUTQ):
            self.count("outq_full")
            return False
        return True

    def take(self):
        """What the worker received since the last call (a list of linkmsg messages), or None."""
        self._mu.acquire()
        try:
            if not self._inq:
                return None
            items = self._inq[:]
            del self._inq[:]
            return items
        finally:
            self._mu.release()

    def rssi(self):
        """The Wi-Fi signal (dBm), or None when the radio cannot say."""
        try:
            return self.board.wlan().status("rssi")
        except Exception:
            return None

    def done(self) -> None:
        self.downlink.done()

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        try:
            _thread.stack_size(16 * 1024)
        except Exception:
            pass
        _thread.start_new_thread(self._worker, ())

    def stop(self) -> None:
        self._stop = True
        self.downlink.stop = True

    # ---------------------------------------------------------------- worker thread
    def _net_up(self) -> bool:
        try:
            w = self.board.wlan()
        except Exception:
            return False
        if w is None:
            return False
        if w.isconnected():
            return True
        ssid = self.wifi.get("ssid")
        if ssid:
            try:
                w.connect(ssid, self.wifi.get("password") or "")
            except Exception:
                pass
            t0 = ticks_ms()
            while not w.isconnected() and ticks_diff(ticks_ms(), t0) < 10000 and not self._stop:
                time.sleep_ms(100)
        return w.isconnected()

    def _ssl(self):
        """The TLS context, built once: the broker must present a chain to the configured CA, for its name.

        mbedTLS checks certificate dates against the system clock, which reads 2000-01-01 after a power-up: it
        is set first (the lock's trusted time, from its RTC or the cloud, else SNTP) or TLS does not start.
        SNTP is good enough for certificate dates; it never becomes the lock's trusted time for codes."""
        if not self.tls:
            return None
        if self._refusal is not None:
            raise ValueError(self._refusal)
        b = self.board
        if not b.clock_ok():
            t = self._trusted_now()
            if t is not None:
                b.set_clock(t)
            else:
                try:
                    b.sntp(self.ntp)
                except OSError:
                    pass
            if not b.clock_ok():
                raise OSError("clock: not set (no SNTP answer from %s, no RTC): no TLS before it is" % self.ntp)
        if self._ctx is None:
            import ssl
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.verify_mode = ssl.CERT_REQUIRED  # MicroPython's client context defaults to CERT_NONE
            ctx.load_verify_locations(cadata=self._ca)
            self._ctx = ctx
            self._ca = None  # parsed into the context: the bytes can go
        return self._ctx

    def sleep(self, ms: int) -> None:
        """The worker waits ms (real time), beating, and stops early when the session stops."""
        t0 = ticks_ms()
        while not self._stop and ticks_diff(ticks_ms(), t0) < ms:
            self.beat = ticks_ms()
            time.sleep_ms(50)

    def _worker(self) -> None:
        i = 0          # the broker to try next
        failed = 0     # connection attempts failed in a row (all brokers)
        while not self._stop:
            self.beat = ticks_ms()
            up = False
            err = None
            try:
                if self._net_up():
                    host, port = self.hosts[i]
                    self.host = host
                    up = self._run(host, port)
                else:
                    err = "wifi"
            except MemoryError as e:  # backs off like any other failure
                err = repr(e)
            except Exception as e:
                err = repr(e)
            up = up or self.connected  # it came up, then ended with an error
            self.last_error = err
            c = self._client
            self._client = None
            if c is not None:
                try:
                    c.sock.close()
                except Exception:
                    pass
            if self.connected:
                self.connected = False
                self.put(self._inq, Down(err), _INQ + _INQ_CONTROL)
            gc.collect()
            if up:
                failed = 0  # a session that came up: retry the same broker first
                wait = jitter(_BACKOFF_FIRST_MS)
            else:
                failed += 1
                if err != "wifi":
                    i = (i + 1) % len(self.hosts)
                n = len(self.hosts)
                if err != "wifi" and failed % n:
                    wait = _NEXT_HOST_MS  # the next broker of the list right away
                else:  # a full round of failures (or no Wi-Fi): back off
                    rounds = (failed + n - 1) // n
                    wait = jitter(ceiling(rounds, _BACKOFF_FIRST_MS, _BACKOFF_MAX_MS))
            self.sleep(wait)

    def _run(self, host: str, port: int) -> bool:
        """One MQTT session with host; returns whether it came up (it ends by raising, or on stop)."""
        self._mu.acquire()
        del self._outq[:]  # what was queued for a previous session is regenerated by the main loop
        self._mu.release()
        c = MQTTClient(self.client_id, host, port, self.user, self.password, _KEEPALIVE, self._ssl())
        dl = self.downlink
        c.set_callback(self.on_message)
        w = self.counter.next()
        sig, body = self.env.seal_up({"v": P.V, "t": "will", "n": w})
        c.set_last_will(self.env.up, sig + body, False, 1)
        # a packet whose payload would not fit the receiving buffer is dropped unread (and reported), never
        # allocated: its size is the payload plus the topic, its length and the packet id
        c.max_packet = len(dl.rx) + len(self.env.down) + 4
        c.rx_buf = dl.receiving()
        self._client = c
        gc.collect()  # the TLS handshake's peak is the session's largest: give it the whole free heap
        c.connect(True, _CONNECT_TIMEOUT)
        c.subscribe(self.env.down, 1)
        self.connected = True
        self.last_error = None
        self.put(self._inq, Up(w), _INQ + _INQ_CONTROL)
        poller = select.poll()
        poller.register(c.sock, select.POLLIN)
        self._rx_at = last_tx = ticks_ms()
        dropped = c.dropped
        while not self._stop:
            self.beat = ticks_ms()
            if not self.board.wlan().isconnected():
                raise OSError("wifi connection lost")
            item = self.pop(self._outq)
            while item is not None:
                item["n"] = self.counter.next()
                c.publish(self.env.up, self.env.seal_up(item), False, 1)
                last_tx = ticks_ms()
                item = self.pop(self._outq)
            ev = poller.poll(50)
            if ev:
                for _, flags in ev:
                    if flags & (select.POLLHUP | select.POLLERR) and not flags & select.POLLIN:
                        raise OSError("connection lost")
                self._rx_at = ticks_ms()
            for _ in range(4):  # also drains what the TLS layer already buffered
                if c.check_msg() is None:
                    break
            if c.dropped != dropped:  # a message too big for the lock: refused, reported, not retried
                dropped = c.dropped
                self._deliver(Refused("oversize"))
            now = ticks_ms()
            if ticks_diff(c.rx_at, self._rx_at) > 0:
                # any packet proves the broker alive (the client notes each one): the messages, and the acks
                # publish() reads while it waits for them
                self._rx_at = c.rx_at
            if ticks_diff(now, last_tx) >= _PING_MS:
                c.ping()
                last_tx = now
            if ticks_diff(now, self._rx_at) >= _DEAD_MS:
                raise OSError("keepalive timeout")
        try:
            c.disconnect()
        except Exception:
            pass
        return True

    def on_message(self, topic, payload) -> None:
        """The client's callback (worker thread): parse and hand over to the main loop."""
        dl = self.downlink
        msg = dl.parse(topic, payload, isinstance(payload, memoryview))
        self._deliver(msg)
        if isinstance(msg, State):
            dl.wait_installed()  # its records are in the receiving buffer until the main loop is through

    def _deliver(self, msg) -> None:
        if isinstance(msg, Refused):
            # every drop is counted here; the main loop hears of it only when the queue has room to spare (it
            # logs a refusal once per reason per 10 minutes anyway), so a flood never crowds out a state
            self.count(msg.reason)
            if not self.put(self._inq, msg, _INQ_REFUSED):
                self.count("inq_full")
            return
        # a genuine message is never dropped: wait for the main loop to make room (the broker holds the rest)
        while not self.put(self._inq, msg, _INQ):
            if self._stop:
                if isinstance(msg, State):
                    self.downlink.done()
                return
            time.sleep_ms(5)


class UpCounter:
    """The uplink counter (docs/protocol.md, Freshness): strictly increasing across reboots, with a high-water
    mark persisted every _STEP values, so it costs one flash write per _STEP messages, not one per message."""

    def __init__(self) -> None:
        hi = 1
        data = store.load("link.bin")
        if data is not None and len(data) == 8:
            hi = 0
            for b in bytes(data):
                hi = (hi << 8) | b
            if hi < 1:
                hi = 1
        # after a reboot continue above the persisted mark: values up to it may have been used
        self.value = hi - 1
        self._hi = hi

    def next(self) -> int:
        n = self.value + 1
        if n >= self._hi:
            hi = n + _STEP
            b = bytearray(8)
            v = hi
            for i in range(7, -1, -1):
                b[i] = v & 0xFF
                v >>= 8
            store.save("link.bin", b)
            self._hi = hi
        self.value = n
        return n
