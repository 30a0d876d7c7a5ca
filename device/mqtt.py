"""KeyDrop's MQTT 3.1.1 client, the same code on the ESP32 and in the simulator (docs/firmware.md, "MQTT client").

Its API follows micropython-lib's umqtt.simple (MQTTClient(client_id, server, port, user, password, keepalive,
ssl) . connect . set_callback . set_last_will . subscribe . publish . check_msg . ping . disconnect; no
wait_msg: the lock never blocks for a packet outside a publish or a subscribe), and adds what the lock's memory plan needs, which umqtt.simple cannot do:
- `max_packet`: an incoming packet larger than this is read in 256-byte chunks and discarded (counted in
  `dropped`), never allocated whole. 0 = no limit.
- `rx_buf`: a bytearray for incoming payloads up to its size, read into without allocating (the callback then
  gets a memoryview valid only during the call). None = allocate per message.
- PUBACK/SUBACK arriving late (outside publish()/subscribe()) are consumed, never left in the stream.
- `rx_at`: ticks_ms() when the last packet of any kind arrived; the session's keepalive watches it (the acks
  publish() reads while it waits are signs of life too).
- `publish(topic, msg)` takes msg as bytes or as a tuple of buffers (e.g. a signature and a body), written after
  the packet's header one after the other: the payload is never copied to join them (at the 128k cap a lock
  with 200 codes and a TLS session has no ~1.2 KB block to spare for that copy at times). The socket has
  TCP_NODELAY, so the writes of one packet do not wait for each other's acknowledgement.

I/O: after the (blocking, timed-out) TCP connect and TLS handshake the socket is non-blocking and every wait
goes through select.poll with the connect timeout as the deadline: a TCP socket timeout under a TLS socket
makes mbedTLS return partial writes, which would lose bytes.
"""
import select
import socket
import struct
from time import ticks_ms

from micropython import const


# the same values on Linux and in lwIP (the unix port's socket module does not name them; the ESP32's
# setsockopt dispatches on the option alone)
_IPPROTO_TCP = const(6)
_NODELAY = const(1)


class MQTTException(Exception):
    pass


def _varlen(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return out


class MQTTClient:
    def __init__(self, client_id, server, port=0, user=None, password=None, keepalive=0, ssl=None):
        if port == 0:
            port = 8883 if ssl else 1883
        self.client_id = client_id
        self.sock = None  # type: socket.socket  # type: ignore[assignment]  # set by connect()
        self.server = server
        self.port = port
        self.ssl = ssl  # an SSLContext (verification is the caller's to configure), or None for plain TCP
        self.pid = 0
        self.cb = None
        self.user = user
        self.password = password
        self.keepalive = keepalive
        self.lw = None  # the last will: (topic, msg, retain, qos)
        self.max_packet = 0
        self.rx_buf = None
        self.dropped = 0
        self.rx_at = ticks_ms()  # when the last packet of any kind arrived (the broker is alive)
        self._timeout = None
        self._raw = None
        self._acked = []

    # -- low level -----------------------------------------------------------------------------------
    def _wait(self, ev):
        p = select.poll()
        p.register(self.sock, ev)
        t = -1 if self._timeout is None else int(self._timeout * 1000)
        for _, flags in p.poll(t):
            if flags & (select.POLLERR | select.POLLHUP) and not flags & ev:
                raise OSError(-1, "mqtt: connection lost")
            return
        raise OSError(110, "mqtt: timed out")

    def _read(self, n):
        """Exactly n bytes, in one preallocated buffer (no re-concatenation: a 15 KB message costs 15 KB)."""
        buf = bytearray(n)
        mv = memoryview(buf)
        got = 0
        while got < n:
            k = self.sock.readinto(mv[got:])
            if k is None:  # would block in the middle of a packet: wait for the rest
                self._wait(select.POLLIN)
                continue
            if not k:
                raise OSError(-1, "mqtt: connection closed")
            got += k
        return buf

    def _write(self, data):
        mv = memoryview(data)
        while len(mv):
            k = self.sock.write(mv)
            if not k:
                self._wait(select.POLLOUT)
                continue
            mv = mv[k:]

    def _str(self, s):
        if isinstance(s, str):
            s = s.encode()
        return struct.pack("!H", len(s)) + s

    def _recv_len(self):
        n = 0
        sh = 0
        while True:
            b = self._read(1)[0]
            n |= (b & 0x7F) << sh
            if not b & 0x80:
                return n
            sh += 7
            if sh > 21:
                raise MQTTException("bad remaining length")

    def _skip(self, n):
        while n > 0:
            k = 256 if n > 256 else n
            self._read(k)
            n -= k

    # -- API -----------------------------------------------------------------------------------------
    def set_callback(self, f):
        self.cb = f

    def set_last_will(self, topic, msg, retain=False, qos=0):
        self.lw = (topic, msg, retain, qos)

    def connect(self, clean_session=True, timeout=None):
        self._timeout = timeout
        addr = socket.getaddrinfo(self.server, self.port, 0, socket.SOCK_STREAM)[0][-1]
        self.sock = socket.socket()
        self._raw = self.sock
        self.sock.settimeout(timeout)
        self.sock.connect(addr)
        try:  # a packet goes out in several writes (publish): none waits for the previous one's ack (Nagle)
            self.sock.setsockopt(_IPPROTO_TCP, _NODELAY, 1)
        except OSError:
            pass  # slower publishes, nothing lost
        if self.ssl is not None:
            # the name is sent (SNI) and checked against the broker's certificate
            self.sock = self.ssl.wrap_socket(self.sock, server_hostname=self.server)
        self.sock.setblocking(False)
        flags = 0x02 if clean_session else 0
        payload = self._str(self.client_id)
        lw = self.lw
        if lw:
            flags |= 0x04 | (lw[3] & 3) << 3 | (0x20 if lw[2] else 0)
            payload += self._str(lw[0]) + self._str(lw[1])
        if self.user is not None:
            flags |= 0x80
            payload += self._str(self.user)
            if self.password is not None:
                flags |= 0x40
                payload += self._str(self.password)
        var = b"\x00\x04MQTT\x04" + bytes([flags]) + struct.pack("!H", self.keepalive)
        body = var + payload
        self._write(b"\x10" + _varlen(len(body)) + body)
        resp = self._read(4)
        if resp[0] != 0x20 or resp[1] != 2:
            raise MQTTException("bad CONNACK")
        if resp[3] != 0:
            raise MQTTException(resp[3])
        self._acked = []
        return resp[2] & 1

    def disconnect(self):
        self._write(b"\xe0\x00")
        self.sock.close()

    def ping(self):
        self._write(b"\xc0\x00")

    def publish(self, topic, msg, retain=False, qos=0):
        if isinstance(topic, str):
            topic = topic.encode()
        if isinstance(msg, str):
            msg = msg.encode()
        parts = msg if isinstance(msg, tuple) else (msg,)
        n = 0
        for p in parts:
            n += len(p)
        hdr = 0x30 | qos << 1 | (1 if retain else 0)
        sz = 2 + len(topic) + n + (2 if qos > 0 else 0)
        pkt = bytearray([hdr]) + _varlen(sz) + self._str(topic)
        pid = 0
        if qos > 0:
            self.pid = pid = self.pid % 65535 + 1
            pkt += struct.pack("!H", pid)
        self._write(pkt)
        for p in parts:  # not joined to the header: no copy of the payload (TCP_NODELAY: no stall between them)
            self._write(p)
        if qos == 1:
            while pid not in self._acked:
                self._packet(True)
            self._acked.remove(pid)
        elif qos == 2:
            raise MQTTException("qos 2 not supported")

    def subscribe(self, topic, qos=0):
        self.pid = pid = self.pid % 65535 + 1
        body = struct.pack("!H", pid) + self._str(topic) + bytes([qos])
        self._write(b"\x82" + _varlen(len(body)) + body)
        while pid not in self._acked:
            self._packet(True)
        self._acked.remove(pid)

    def _packet(self, block):
        """Read one packet (block: wait for one). Returns None for nothing/ping, the op for other non-PUBLISH
        packets; dispatches PUBLISH to the callback (PUBACK sent for QoS 1)."""
        res = self.sock.read(1)
        if res is None:
            if not block:
                return None
            self._wait(select.POLLIN)
            return None
        if res == b"":
            raise OSError(-1, "mqtt: connection closed")
        self.rx_at = ticks_ms()
        op = res[0]
        sz = self._recv_len()
        if op == 0xD0:  # PINGRESP
            self._skip(sz)
            return None
        if op & 0xF0 != 0x30:
            if op == 0x40 or op == 0x90:  # PUBACK / SUBACK: record the packet id
                data = self._read(sz)
                pid = data[0] << 8 | data[1]
                if op == 0x90 and len(data) > 2 and data[2] == 0x80:
                    raise MQTTException("subscription refused")
                self._acked.append(pid)
                if len(self._acked) > 16:
                    self._acked.pop(0)
            else:
                self._skip(sz)
            return op
        big = self.max_packet and sz > self.max_packet
        tl = self._read(2)
        tl = tl[0] << 8 | tl[1]
        topic = b""
        if big:
            self._skip(tl)  # too big for us: read only the fields the ack needs, discard the rest unallocated
        else:
            topic = bytes(self._read(tl))
        sz -= tl + 2
        pid = 0
        if op & 6:
            p = self._read(2)
            pid = p[0] << 8 | p[1]
            sz -= 2
        if big:
            self._skip(sz)
            self.dropped += 1
            if op & 6 == 2:
                self._write(b"\x40\x02" + struct.pack("!H", pid))
            return None
        rx = self.rx_buf
        if rx is not None and 0 < sz <= len(rx):
            # caller-provided buffer: no allocation; the memoryview is valid during the callback only
            mv = memoryview(rx)
            got = 0
            while got < sz:
                k = self.sock.readinto(mv[got:sz])
                if k is None:
                    self._wait(select.POLLIN)
                    continue
                if not k:
                    raise OSError(-1, "mqtt: connection closed")
                got += k
            msg = mv[:sz]  # type: object
        else:
            msg = self._read(sz) if sz else b""
        if op & 6 == 2:
            self._write(b"\x40\x02" + struct.pack("!H", pid))
        elif op & 6 == 4:
            raise MQTTException("qos 2 not supported")
        if self.cb is None:
            raise MQTTException("no callback set")
        self.cb(topic, msg)
        return op

    def check_msg(self):
        """Non-blocking: process one pending packet if there is one."""
        return self._packet(False)
