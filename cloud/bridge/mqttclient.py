"""paho's MQTT client for a subscriber that takes thousands of messages a second: reads in blocks, and a chunk's
acknowledgements written at once.

paho reads a packet with three `recv` calls or more (its first byte, each byte of its length, the rest), and goes
back to `select` after each packet; every `ack` is queued and written on its own, with a byte written to wake the
network thread. In a flood of signed acks that cost the bridge more of its one core (the GIL) than verifying and
applying them: 157 µs of CPU per message over TCP and 179 over TLS with paho's plain client, 53 and 52 with this
one (tools/bench/bridge_mqtt.py, 2026-12-03). Nothing else of paho changes: it still parses and handles every packet.

Two of paho's own seams are used: `_create_socket` (paho wraps its socket there too, for websockets) and
`_packet_queue` (where paho queues every packet it writes). `fast()` says whether the installed paho has them; if
not, the session falls back to paho's plain client (slower, not wrong), and tests/bridge/test_bridge_mqtt.py,
which asserts the fast path with the installed paho, fails: an upgrade of paho that moved them is noticed.
"""
from __future__ import annotations

import ssl
import struct
from typing import Any, Iterable

import paho.mqtt.client as mqtt

_PUBACK = struct.Struct("!BBH")


def fast() -> bool:
    """Whether the installed paho has the seams this client uses."""
    return all(callable(getattr(mqtt.Client, name, None)) for name in ("_create_socket", "_packet_queue"))


class ReadAhead:
    """A connected socket (plain or TLS) read BLOCK bytes at a time: paho's small reads are served from the block.
    `pending()` counts what is held here (and, for TLS, in the TLS layer): paho does not wait in select() while
    bytes are pending, as it does for a TLS socket."""

    BLOCK = 65536

    def __init__(self, sock: Any):
        self._sock = sock
        self._data = b""
        self._pos = 0

    def buffered(self) -> int:
        return len(self._data) - self._pos

    def recv(self, n: int) -> bytes:
        """Up to n bytes: from the block while it lasts (a short read at its end), else one recv of a block.
        The socket's own errors (would block, TLS wants to read) and its b"" at EOF pass through unchanged."""
        if self._pos >= len(self._data):
            data = self._fill()
            if len(data) <= n:
                self._data, self._pos = b"", 0
                return data
            self._data, self._pos = data, 0
        pos = self._pos
        out = self._data[pos:pos + n]
        self._pos = pos + len(out)
        return out

    def _fill(self) -> bytes:
        """One block: what one recv returns, then more while the socket has it at once (a TLS socket returns one
        record a call, and mosquitto writes each packet in its own record)."""
        data = self._sock.recv(self.BLOCK)
        if not data or len(data) >= self.BLOCK or self._sock.gettimeout() != 0.0:
            return data  # (a socket that may block is read once: paho makes its socket non-blocking at once)
        parts, size = [data], len(data)
        while size < self.BLOCK:
            try:
                more = self._sock.recv(self.BLOCK - size)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break  # nothing more now (a TLS socket that wants to write is asked again by paho's next read)
            except OSError:
                break  # the error is met again at the next recv, after what was read here is handled
            if not more:
                break  # EOF: the next recv returns b"" again
            parts.append(more)
            size += len(more)
        return b"".join(parts)

    def pending(self) -> int:
        inner = getattr(self._sock, "pending", None)
        return self.buffered() + (inner() if inner is not None else 0)

    def send(self, data) -> int:
        return self._sock.send(data)

    def fileno(self) -> int:
        return self._sock.fileno()

    def setblocking(self, flag: bool) -> None:
        self._sock.setblocking(flag)

    def close(self) -> None:
        self._data, self._pos = b"", 0
        self._sock.close()

    def __getattr__(self, name: str) -> Any:  # anything else paho or a caller asks of the socket
        return getattr(self._sock, name)


class Client(mqtt.Client):
    """paho's Client whose socket is read in blocks (ReadAhead) and which can acknowledge many QoS 1 messages in
    one write (ack_all). Used only where fast() holds."""

    def _create_socket(self):
        return ReadAhead(super()._create_socket())

    def loop_read(self, max_packets: int = 1) -> mqtt.MQTTErrorCode:
        """paho's loop_read, again while whole packets are waiting in the block (paho would go back to select()
        after one, and select() knows nothing of the block)."""
        rc = super().loop_read(max_packets)
        sock = self._sock
        while rc == mqtt.MQTT_ERR_SUCCESS and isinstance(sock, ReadAhead) and sock.buffered() and self._sock is sock:
            rc = super().loop_read(max_packets)
        return rc

    def ack_all(self, mids: Iterable[int]) -> None:
        """PUBACK each of these QoS 1 message ids, in this order, as one write (paho's ack() for each would queue
        and write one packet at a time)."""
        packet = b"".join(_PUBACK.pack(mqtt.PUBACK, 2, mid) for mid in mids)
        if packet:
            self._packet_queue(mqtt.PUBACK, packet, 0, 0)
