"""Firmware updates, the part that stays loaded (docs/ota.md): plugs the update messages into the link and
loads the updater (updater.py: fetch, hash, trial, reports) only while there is work: an announcement, a
fetch to resume, a boot state to act on or tell the cloud about. Kept small: at 128k the link leaves the
rest of the firmware a few KB of heap, in fragments."""
import sys

_MODS = ("updater", "fwbundle", "filehash")


class Idle:
    """What the updater answers to; this do-nothing one stands in while updater.py is not loaded."""

    def on_message(self, obj: dict) -> None:
        pass

    def on_link(self, data: dict) -> None:
        pass

    def poll(self, now) -> None:
        pass

    def idle(self) -> bool:
        return False


_IDLE = Idle()


class Msg:
    """A verified-by-HMAC "fw" or "fwchunk" body, handed from the link's worker to the main loop."""

    def __init__(self, obj) -> None:
        self.obj = obj


def _exists(path: str) -> bool:
    import os

    try:
        os.stat(path)
        return True
    except OSError:
        return False


class Ota:
    def __init__(self, lock, board, cfg: dict) -> None:
        self.lock = lock
        self.board = board
        self.cfg = cfg
        self.send = None  # the link's send, once attached
        self.connected = False
        self.u = _IDLE  # the Updater while there is work
        if _exists("boot.bin") or _exists("ota.bin"):
            self._load()

    def _load(self):
        if self.u is _IDLE:
            from updater import Updater

            u = Updater(self.lock, self.board, self.cfg)
            if self.send is not None:
                u.send = self.send
            if self.connected:
                u.on_link({"state": "connected"})
            self.u = u
        return self.u

    def attach(self, link) -> None:
        """The two downlink types (parsed in the link's worker thread), their handler on the main loop, the
        link's send, and its events (connected, offline, the signed time answering the hello)."""
        dl = link.session.downlink
        dl.parser("fw", Msg)
        dl.parser("fwchunk", Msg)
        link.handle(Msg, self._on_msg)
        self.send = link.send
        u = self.u
        if u is not _IDLE:
            u.send = link.send  # type: ignore[attr-defined]
        self.lock.add_listener(self._on_event)

    def _on_msg(self, msg, now) -> None:
        self._load().on_message(msg.obj)

    def _on_event(self, event: str, data: dict) -> None:
        if event == "link":
            st = data.get("state")
            if st is not None:
                self.connected = st == "connected"
            self.u.on_link(data)

    def poll(self, now) -> None:
        u = self.u
        if u is not _IDLE:
            u.poll(now)
            if u.idle():
                self.u = _IDLE
                for m in _MODS:
                    sys.modules.pop(m, None)
