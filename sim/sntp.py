"""A small SNTP server (RFC 4330, server mode) on loopback: the time service of the simulated network. The
simulated board's SNTP client (sim/board/board.py) asks it, as the ESP32's `ntptime` asks pool.ntp.org; it
answers with this machine's clock. tools/simlock and the real-time demo start one per simulated lock."""
from __future__ import annotations

import socket
import struct
import threading
import time

NTP_DELTA = 2208988800  # seconds from 1900-01-01 (NTP's era 0) to 1970-01-01


def _ts(t: float) -> bytes:
    return struct.pack("!II", int(t) + NTP_DELTA, int((t % 1) * 2**32))


class SntpServer:
    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.addr = "%s:%d" % self.sock.getsockname()
        self.answered = 0

    def start(self) -> "SntpServer":
        threading.Thread(target=self._serve, daemon=True).start()
        return self

    def _serve(self) -> None:
        while True:
            try:
                req, peer = self.sock.recvfrom(512)
            except OSError:
                return  # closed
            if len(req) < 48 or req[0] & 7 != 3:  # only client requests
                continue
            now = time.time()
            version = req[0] >> 3 & 7
            head = struct.pack("!BBbbII4s", version << 3 | 4, 1, 6, -20, 0, 0, b"LOCL")
            self.sock.sendto(head + _ts(now) + req[40:48] + _ts(now) + _ts(time.time()), peer)
            self.answered += 1

    def stop(self) -> None:
        self.sock.close()
