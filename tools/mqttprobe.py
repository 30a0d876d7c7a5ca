"""One raw MQTT 3.1.1 CONNECT, timed to the byte: is a login accepted right now (benchmarks, cluster readiness)."""
from __future__ import annotations

import socket
import struct


def _s(b: bytes) -> bytes:
    return struct.pack(">H", len(b)) + b


def connect_once(port: int, client_id: str, user: str, password: str) -> int:
    """One MQTT 3.1.1 CONNECT; returns the CONNACK return code (0 = accepted)."""
    body = _s(b"MQTT") + bytes([4, 0xC2]) + struct.pack(">H", 30) + _s(client_id.encode()) + _s(user.encode()) \
        + _s(password.encode())
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(bytes([0x10, len(body)]) + body)
        ack = b""
        while len(ack) < 4:
            chunk = s.recv(4 - len(ack))
            if not chunk:
                return -1
            ack += chunk
        s.sendall(b"\xe0\x00")
        return ack[3]
