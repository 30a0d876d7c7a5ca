"""The lock's MQTT link to the cloud (docs/protocol.md) — the only module that touches MQTT.

Two sides:
- a worker thread owns the network: Wi-Fi (board.wlan()), the MQTT client (umqtt.simple: frozen on the ESP32,
  hostlib/umqtt on the host), connect with a signed last will, subscribe, keepalive, publishing. It may block
  (a connect that hangs, a TLS handshake, a broker that stops answering): nothing else waits for it.
- the main loop calls Link.poll(now_ms) (a Lock service): it drains what the worker received (already
  verified and parsed), applies it to the lock (install code set, trusted time, log cursor) and queues what
  to send (hello, acks, log batches, rotation requests). Link.poll never blocks on the network.
The two exchange messages through small bounded lists guarded by a _thread lock (the unix port has no GIL).
"""
import _thread
import gc
import os
import select
import time
from binascii import hexlify
from time import ticks_add, ticks_diff, ticks_ms

import protocol as P
import store
from version import VERSION

from umqtt.simple import MQTTClient  # frozen on the ESP32; hostlib/umqtt on the host

LINK_FILE = "link.bin"
_STEP = 64              # counter high-water mark step (docs/protocol.md, Freshness)
_KEEPALIVE = 30         # seconds announced to the broker
_PING_MS = 15000
_DEAD_MS = 45000
_CONNECT_TIMEOUT = 10   # seconds, socket timeout for connect and blocking reads
_LOG_RESEND_MS = 10000
_ROT_FIRST_MS = 30000
_ROT_MAX_MS = 3600000
_INQ = 8
_OUTQ = 16


def _der(data):
    """A PEM certificate -> DER (mbedTLS wants PEM NUL-terminated; DER avoids the question)."""
    if not data.startswith(b"-----BEGIN"):
        return data
    from binascii import a2b_base64
    lines = data.split(b"\n")
    body = b"".join(ln.strip() for ln in lines if ln.strip() and not ln.startswith(b"-----"))
    i = data.find(b"-----END")
    if i > 0:  # first certificate only
        body = b"".join(ln.strip() for ln in data[:i].split(b"\n") if ln.strip() and not ln.startswith(b"-----"))
    return a2b_base64(body)


class Link:
    def __init__(self, lock, cfg, board, client_factory=None):
        self.lock = lock
        self.board = board
        m = cfg["mqtt"]
        self.host = m.get("host", "127.0.0.1")
        self.tls = bool(m.get("tls", False))
        self.port = int(m.get("port") or (8883 if self.tls else 1883))
        self.user = m.get("username") or lock.lock_id
        self.password = m.get("password")
        self.ca = m.get("ca")  # path of the CA certificate (PEM or DER) on the lock's flash
        self.wifi = cfg.get("wifi") or {}
        self.env = P.Envelope(lock.secret, lock.lock_id)
        self.client_id = "kd-" + lock.lock_id
        self._factory = client_factory or MQTTClient
        self._mu = _thread.allocate_lock()
        self._inq = []
        self._outq = []
        self._stop = False
        self._started = False
        self.counts = {}
        # worker-only state
        self._n, self._hi = self._load_counter()
        self._client = None
        # the receive buffer for downlink payloads, allocated once at boot while the heap is unfragmented
        self._rx = bytearray(P.MAX_DOWN)
        # two buffers for decoded code records: the installed code set keeps using (adopts) the one it was
        # decoded into, the next state is decoded into the other
        self._recbufs = (bytearray(P.MAX_CODES * P.REC), bytearray(P.MAX_CODES * P.REC))
        self._held = -1       # index of the buffer the lock's code set holds (-1: none, e.g. after boot)
        self._staged = -1     # index of the buffer with records the main loop has not installed yet
        # shared flags (single words, written by one side)
        self.connected = False
        self.last_error = None
        # main-loop-only state
        self._nonce = None
        self._cursor = 0
        self._sent_hi = 0
        self._sent_at = 0
        self._rot_backoff = _ROT_FIRST_MS
        self._rot_next = 0
        self._shown_error = None

    # ---------------------------------------------------------------- shared helpers
    def _count(self, what):
        self._mu.acquire()
        self.counts[what] = self.counts.get(what, 0) + 1
        self._mu.release()

    def _emit(self, data):
        try:
            self.lock.emit("link", data)
        except Exception:  # a listener's fault must not break the link
            pass

    def _put(self, q, item, cap):
        self._mu.acquire()
        try:
            if len(q) >= cap:
                return False
            q.append(item)
            return True
        finally:
            self._mu.release()

    def _take(self, q):
        self._mu.acquire()
        try:
            if not q:
                return None
            items = q[:]
            del q[:]
            return items
        finally:
            self._mu.release()

    def _pop(self, q):
        self._mu.acquire()
        try:
            return q.pop(0) if q else None
        finally:
            self._mu.release()

    # ---------------------------------------------------------------- counter persistence (worker)
    def _load_counter(self):
        hi = 1
        data = store.load(LINK_FILE)
        if data is not None and len(data) == 8:
            hi = 0
            for b in bytes(data):
                hi = (hi << 8) | b
            if hi < 1:
                hi = 1
        return hi - 1, hi

    def _next_n(self):
        n = self._n + 1
        if n >= self._hi:
            hi = n + _STEP
            b = bytearray(8)
            v = hi
            for i in range(7, -1, -1):
                b[i] = v & 0xFF
                v >>= 8
            store.save(LINK_FILE, b)
            self._hi = hi
        self._n = n
        return n

    # ---------------------------------------------------------------- worker thread
    def start(self):
        if self._started:
            return
        self._started = True
        try:
            _thread.stack_size(16 * 1024)
        except Exception:
            pass
        _thread.start_new_thread(self._worker, ())

    def stop(self):
        self._stop = True

    def _net_up(self):
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
        if not self.tls:
            return None
        import ssl
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # a client context verifies the server (CERT_REQUIRED)
        if self.ca:
            with open(self.ca, "rb") as f:
                ctx.load_verify_locations(cadata=_der(f.read()))
        return ctx

    def _sleep(self, ms):
        t0 = ticks_ms()
        while not self._stop and ticks_diff(ticks_ms(), t0) < ms:
            time.sleep_ms(50)

    def _worker(self):
        backoff = 1000
        while not self._stop:
            ok = False
            try:
                if self._net_up():
                    ok = self._session()
                else:
                    self.last_error = "wifi"
            except MemoryError as e:
                self.last_error = repr(e)
                ok = True  # a transient shortage, not the network: retry soon, don't back off to a minute
            except Exception as e:
                self.last_error = repr(e)
            c = self._client
            self._client = None
            if c is not None:
                try:
                    c.sock.close()
                except Exception:
                    pass
            if self.connected:
                self.connected = False
                self._put(self._inq, ("down", self.last_error), _INQ + 2)
            gc.collect()
            if ok:
                backoff = 1000
            self._sleep(backoff)
            backoff = min(backoff * 2, 60000)

    def _session(self):
        """One MQTT session: returns/raises when it ends."""
        self._take(self._outq)  # what was queued for a previous session is regenerated by the main loop
        c = self._factory(self.client_id, self.host, self.port, self.user, self.password, _KEEPALIVE,
                          self._ssl())
        c.set_callback(self._on_msg)
        w = self._next_n()
        c.set_last_will(self.env.up, self.env.seal_up({"v": P.V, "t": "will", "n": w}), False, 1)
        # extensions of the host client (hostlib/umqtt): drop oversize packets unallocated, and receive into
        # the boot-time buffer; the frozen umqtt.simple ignores them
        setattr(c, "max_packet", P.MAX_DOWN + 256)
        setattr(c, "rx_buf", self._rx)
        self._client = c
        c.connect(True, _CONNECT_TIMEOUT)
        c.subscribe(self.env.down, 1)
        self.connected = True
        self.last_error = None
        self._put(self._inq, ("up", w), _INQ + 2)
        poller = select.poll()
        poller.register(c.sock, select.POLLIN)
        now = ticks_ms()
        last_rx = now
        last_tx = now
        while not self._stop:
            if not self.board.wlan().isconnected():
                raise OSError("wifi lost")
            item = self._pop(self._outq)
            while item is not None:
                item["n"] = self._next_n()
                c.publish(self.env.up, self.env.seal_up(item), False, 1)
                last_tx = ticks_ms()
                item = self._pop(self._outq)
            ev = poller.poll(50)
            if ev:
                for _, flags in ev:
                    if flags & (select.POLLHUP | select.POLLERR) and not flags & select.POLLIN:
                        raise OSError("connection lost")
                last_rx = ticks_ms()
            for _ in range(4):  # also drains what the TLS layer already buffered
                if c.check_msg() is None:
                    break
                last_rx = ticks_ms()
            now = ticks_ms()
            if ticks_diff(now, last_tx) >= _PING_MS:
                c.ping()
                last_tx = now
            if ticks_diff(now, last_rx) >= _DEAD_MS:
                raise OSError("keepalive timeout")
        try:
            c.disconnect()
        except Exception:
            pass
        return True

    def _on_msg(self, topic, payload):
        """Worker thread: verify + parse, hand over to the main loop. Never raises (but MemoryError).

        Memory: the payload is (or is copied into) the boot-time receive buffer; a state's code records are
        decoded from it into the boot-time staging buffer and blanked in place before json.loads, so a full
        200-code state allocates nothing large (the unix port's 64-bit heap at 128k is fragmented to ~7 KB
        blocks after boot)."""
        if bytes(topic) != self.env.down:
            self._count("wrong_topic")
            return
        rx = self._rx
        try:
            n = len(payload)
            if n > len(rx):
                raise P.ProtocolError("oversize")
            if not (isinstance(payload, memoryview) and getattr(self._client, "rx_buf", None) is rx):
                rx[:n] = payload  # the frozen umqtt.simple hands over its own bytes
            payload = None
            body = self.env.verify(self.env.down, memoryview(rx)[:n])
            blob = None
            if rx.find(b'"t":"state"', P.SIG_LEN, n) >= 0:
                while self._staged >= 0 and not self._stop:  # the last one is not installed yet
                    time.sleep_ms(5)
                gc.collect()  # the old code set's buffers are garbage now: give the parse a clean heap
                free = 1 if self._held == 0 else 0
                k = P.take_b64(rx, P.SIG_LEN, n, b'"c":"', self._recbufs[free])
                if k >= 0:
                    blob = memoryview(self._recbufs[free])[:k]
            obj = P.loads(body)
            body = None
            t = obj.get("t")
            if t == "state":
                item = ("state",) + P.parse_state(obj, blob) + (free if blob is not None else -1,)
                self._staged = item[-1]
            elif t == "time":
                item = ("time",) + P.parse_time(obj)
            elif t == "logack":
                item = ("logack", P.parse_logack(obj))
            else:
                raise P.ProtocolError("unknown_type")
        except P.ProtocolError as e:
            self._count(e.args[0])
            self._put(self._inq, ("refused", e.args[0]), _INQ + 2)
            return
        except MemoryError:
            obj = None
            gc.collect()
            self._count("no_memory")
            raise  # the session ends; the retained state comes again after the reconnect (with backoff)
        except Exception:
            self._count("malformed")
            return
        obj = None
        if not self._put(self._inq, item, _INQ):
            if item[0] == "state":
                self._staged = -1
            self._count("inq_full")

    # ---------------------------------------------------------------- main loop side
    def send(self, obj):
        if not self.connected:
            return False
        if not self._put(self._outq, obj, _OUTQ):
            self._count("outq_full")
            return False
        return True

    def poll(self, now):
        if not self._started:
            self.start()
        items = self._take(self._inq)
        if items:
            for it in items:
                try:
                    self._apply(it, now)
                except Exception as e:
                    self._count("apply_error")
                    self._emit({"error": repr(e)})
        err = self.last_error
        if err != self._shown_error:
            self._shown_error = err
            if err is not None:
                self._emit({"error": err})
        if self.connected:
            self._upload(now)
            self._rotation(now)

    def _apply_state(self, rev, codes, backup):
        lock = self.lock
        if rev > lock.revision:
            if lock.install_codeset(rev, codes, backup):
                self.send({"v": P.V, "t": "ack", "rev": rev})
                self._emit({"codeset": rev, "codes": len(codes)})
                return True
            else:
                self._count("install_refused")
                self._emit({"refused": "install", "revision": rev})
        elif rev == lock.revision:
            self.send({"v": P.V, "t": "ack", "rev": rev})
        else:
            lock.install_codeset(rev, codes, backup)  # refuses and logs the stale revision
            self._count("stale_revision")
            self._emit({"refused": "stale_revision", "revision": rev})

    def _apply(self, it, now):
        kind = it[0]
        lock = self.lock
        if kind == "up":
            self._nonce = hexlify(os.urandom(8)).decode()
            self._sent_hi = self._cursor  # resend whatever was not acknowledged
            self._rot_next = now
            self.send({"v": P.V, "t": "hello", "will": it[1], "fw": VERSION, "boot": lock.boot_count,
                       "time": lock.trusted_now(), "rev": lock.revision, "nonce": self._nonce})
            self._emit({"state": "connected"})
        elif kind == "down":
            self._nonce = None
            self._emit({"state": "offline", "reason": it[1]})
        elif kind == "time":
            _, epoch, nonce = it
            if self._nonce is not None and nonce == self._nonce:
                self._nonce = None
                ok = lock.set_trusted_time(epoch, "server")
                self._emit({"time": epoch, "ok": ok})
            else:
                self._count("stale_time")
                self._emit({"refused": "stale_time"})
        elif kind == "state":
            _, rev, codes, backup, buf = it
            try:
                if self._apply_state(rev, codes, backup) and buf >= 0:
                    self._held = buf  # the new code set adopted these records
            finally:
                self._staged = -1
        elif kind == "logack":
            if it[1] > self._cursor:
                self._cursor = it[1]
        elif kind == "refused":
            self._log_refused()
            self._emit({"refused": it[1]})

    def _log_refused(self):
        """A downlink message failed verification: note it in the access log (kind codeset_refused, 0)."""
        try:
            import accesslog
            self.lock.record(accesslog.CODESET_REFUSED)
        except Exception:
            pass

    def _upload(self, now):
        # network timeouts run on the real clock (ticks_ms), not the main loop's `now` (same on the ESP32;
        # in the simulator the world's clock may jump ahead)
        now = ticks_ms()
        lock = self.lock
        if self._sent_hi > self._cursor:
            if ticks_diff(now, self._sent_at) < _LOG_RESEND_MS:
                return
            self._sent_hi = self._cursor  # no logack in time: send again from the cursor
        if lock.last_seq <= self._cursor:
            return
        evs = lock.log_since(self._cursor, P.LOG_BATCH)
        if not evs:
            self._cursor = lock.last_seq  # the ring dropped them
            return
        if self.send({"v": P.V, "t": "log", "ev": evs}):
            self._sent_hi = evs[-1]["seq"]
            self._sent_at = now

    def _rotation(self, now):
        lock = self.lock
        if not lock.rotation_due:
            self._rot_backoff = _ROT_FIRST_MS
            # keep the deadline near now: ticks wrap (2**30 ms on the ESP32), so a deadline left days behind
            # would read as days ahead when rotation falls due
            self._rot_next = now
            return
        if ticks_diff(now, self._rot_next) < 0:
            return
        if not self.send({"v": P.V, "t": "rotate", "first_used": lock.backup_first_used}):
            return  # not queued: try again on the next poll
        self._emit({"rotate": "requested"})
        self._rot_next = ticks_add(now, self._rot_backoff)
        self._rot_backoff = min(self._rot_backoff * 2, _ROT_MAX_MS)

    def status(self):
        return {"connected": self.connected, "last_error": self.last_error, "counter": self._n,
                "log_cursor": self._cursor, "counts": dict(self.counts)}


def start(lock, cfg, board):
    """main.py's entry point: a Lock service, or None when the config has no usable mqtt section."""
    m = cfg.get("mqtt")
    if not isinstance(m, dict) or not m.get("host"):
        return None
    return Link(lock, cfg, board)
