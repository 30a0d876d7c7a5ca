"""The simulated network's SNTP client (board.sntp), asking the loopback server of sim/sntp.py. Imported only
while the firmware sets its clock, then dropped again: the simulator's own code shares the firmware's heap."""
import time


def query(world: dict, emit, timeout_s: int = 2) -> int:
    """Ask the simulated network's SNTP server (env SIM_SNTP, "host:port") for the time: UNIX epoch seconds, or
    OSError. world.json "sntp": false plays a network where nobody answers. emit: report it (or False)."""
    import os
    import socket

    where = os.getenv("SIM_SNTP")
    if not world.get("sntp", True) or not where:
        time.sleep(timeout_s)  # like a query nobody answers
        raise OSError(110, "sntp: no answer")
    host, port = where.rsplit(":", 1)
    addr = socket.getaddrinfo(host, int(port), 0, socket.SOCK_DGRAM)[0][-1]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.settimeout(timeout_s)
        req = bytearray(48)
        req[0] = 0x23  # leap 0, version 4, mode 3 (client)
        s.sendto(req, addr)
        r = s.recv(48)
    finally:
        s.close()
    if len(r) < 48 or r[0] & 7 != 4 or r[1] == 0:  # a server's answer, not a kiss-of-death
        raise OSError(71, "sntp: bad answer")
    epoch = ((r[40] << 24) | (r[41] << 16) | (r[42] << 8) | r[43]) - 2208988800
    if emit:
        emit({"event": "clock", "source": "sntp", "epoch": epoch})
    return epoch

