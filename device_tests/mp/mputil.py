"""Helpers for the MicroPython-side tests: a scratch flash directory, a config, and a lock booted on the
simulated board (non-interactive: the test drives the world and the main loop itself)."""
import os

import board as simboard
import config
import store
from hmac256 import Hmac256

SECRET = bytes(range(32))
MAC = Hmac256(SECRET)
ROOT = os.getenv("TEST_TMP") or "/tmp"
_n = [0]


def rmtree(path: str) -> None:
    try:
        for name in os.listdir(path):
            p = path + "/" + name
            if os.stat(p)[0] & 0x4000:
                rmtree(p)
            else:
                os.remove(p)
        os.rmdir(path)
    except OSError:
        pass


def fresh_dir() -> str:
    """A new empty directory, made the working directory (the lock's flash)."""
    os.chdir(ROOT)
    _n[0] += 1
    d = ROOT + "/flash%d" % _n[0]
    rmtree(d)
    os.mkdir(d)
    os.chdir(d)
    store.corrupt_seen = 0
    return d


def write_config(backup: str = "5821", **kw) -> None:
    import json

    cfg = {"lock_id": "24a16054ab3c", "secret": "".join("%02x" % b for b in SECRET), "relay_ms": 5000,
           "code_length": 4, "backup_digest": "".join("%02x" % b for b in MAC.digest(backup.encode()))}
    cfg.update(kw)
    with open("config.json", "w") as f:
        json.dump(cfg, f)


def digest(code: str) -> bytes:
    return MAC.digest(code.encode())


class Sim:
    """A lock on the simulated board; advance() runs the world and the main loop together."""

    def __init__(self, rtc=False, epoch_ms=1767225600000, world=None) -> None:
        from lock import Lock

        cfg = config.load()
        self.board = simboard.Board(cfg)
        w = self.board.world
        w.epoch_ms = epoch_ms
        if world is not None:
            w.w = world
        w.w["rtc"] = rtc
        import simrtc

        self.board._i2c = simrtc.SimI2C(w)
        self.events = []
        self.relay_log = []
        self.board.on_relay = self.relay_log.append
        import main

        self.lock = Lock(self.board, cfg, *main.drivers(self.board, cfg))
        self.lock.add_listener(lambda e, d: self.events.append((e, d)))

    def advance(self, ms: int, step: int = 5) -> None:
        w = self.board.world
        end = w.ms + ms
        while w.ms < end:
            self.lock.poll(w.ticks())
            w.step(min(step, end - w.ms))
        self.lock.poll(w.ticks())

    def type(self, keys: str, hold: int = 80, gap: int = 80) -> None:
        w = self.board.world
        for k in keys:
            w.pressed = simboard.KEYS.index(k)
            self.advance(hold)
            w.pressed = -1
            self.advance(gap)

    def feedback(self):
        return [d["kind"] for e, d in self.events if e == "feedback"]

    def logs(self, kind=None):
        return [d for e, d in self.events if e == "log" and (kind is None or d["kind"] == kind)]

    def relay_open(self) -> bool:
        return self.lock.relay.is_on
