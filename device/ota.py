"""Firmware updates, the part that stays loaded (docs/ota.md): plugs the update messages into the link, tells
the cloud what the boot selector decided (a rollback, a refused release), and loads the updater (updater.py:
fetch, hash, trial) only while there is work: an announcement, a download to resume, a version on trial. At
128k the heap left beside the link is fragmented into blocks of a few KB: the updater's code lives there only
then, and the signature check runs in the boot selector, before the link takes the heap."""
import sys

import store

_JOB = "ota.bin"
_MODS = ("updater", "fwbundle", "filehash")


class Release:
    """A verified-by-HMAC "fw" body (a release announcement); checked by the updater on the main loop."""

    def __init__(self, obj) -> None:
        self.obj = obj


class Chunk:
    """A verified-by-HMAC "fwchunk" body: ver, off and the bytes (decoded in the link's worker)."""

    def __init__(self, ver, off, data) -> None:
        self.ver = ver
        self.off = off
        self.data = data


def _release(obj):
    return Release(obj)


def _chunk(obj):
    from binascii import a2b_base64

    import protocol as P

    ver = obj.get("ver")
    off = obj.get("off")
    d = obj.get("d")
    obj["d"] = None
    if not isinstance(ver, str) or not isinstance(off, int) or isinstance(off, bool) or not isinstance(d, str):
        raise P.ProtocolError("malformed")
    try:
        return Chunk(ver, off, a2b_base64(d))
    except ValueError:
        raise P.ProtocolError("malformed")


class Idle:
    """What the updater answers to; this do-nothing one stands in while updater.py is not loaded."""

    def __init__(self) -> None:
        self.send = lambda obj: False  # the link's send: queue one uplink body (dict), True when queued

    def on_connected(self) -> None:
        pass

    def on_disconnected(self) -> None:
        pass

    def on_answer(self) -> None:
        pass

    def on_chunk(self, ver, off, data) -> None:
        pass

    def poll(self, now) -> None:
        pass

    def idle(self) -> bool:
        return False

    def status(self) -> dict:
        return {"phase": None}


_IDLE = Idle()


class Ota:
    def __init__(self, lock, board, cfg: dict) -> None:
        self.lock = lock
        self.board = board
        self.cfg = cfg
        self.send = lambda obj: False
        self.connected = False
        self.u = _IDLE  # the loaded Updater while there is work
        import bootstate

        st = bootstate.load()
        # what the boot selector decided, told to the cloud on every connection (it counts each event once):
        # the last rollback, the last release it refused to install
        self.told = []
        last = st.get("last")
        if last:
            self.told.append({"v": 1, "t": "fwstatus", "state": "rolled_back", "ver": last["ver"],
                              "reason": last["reason"], "rollbacks": st["rollbacks"]})
        refused = st.get("refused")
        if refused:
            self.told.append({"v": 1, "t": "fwstatus", "state": "refused", "ver": refused["ver"],
                              "reason": refused["reason"]})
        if st["trial"] or store.load(_JOB) is not None:
            self._load()

    def _load(self):
        if self.u is _IDLE:
            from updater import Updater

            u = Updater(self.lock, self.board, self.cfg)
            u.send = self.send
            if self.connected:
                u.on_connected()
            self.u = u
        return self.u

    def _unload(self) -> None:
        self.u = _IDLE
        for m in _MODS:
            sys.modules.pop(m, None)

    def attach(self, link) -> None:
        """The two downlink types (parsed in the link's worker thread), their handlers on the main loop, the
        link's send, and its events (connected, offline, the signed time answering the hello)."""
        dl = link.session.downlink
        dl.parser("fw", _release)
        dl.parser("fwchunk", _chunk)
        link.handle(Release, self._on_release)
        link.handle(Chunk, self._on_chunk)
        self.send = link.send
        self.u.send = link.send
        self.lock.add_listener(self._on_event)

    def _on_release(self, msg, now) -> None:
        from updater import parse_release

        u = self._load()
        try:
            args = parse_release(msg.obj)
        except ValueError:
            return  # malformed: the session's counters already saw it as a message; nothing to fetch
        u.on_release(*args)

    def _on_chunk(self, msg, now) -> None:
        self.u.on_chunk(msg.ver, msg.off, msg.data)

    def _on_event(self, event: str, data: dict) -> None:
        if event != "link":
            return
        st = data.get("state")
        u = self.u
        if st == "connected":
            self.connected = True
            for body in self.told:
                self.send(body)
                ev = dict(body)
                ev.pop("v")
                ev.pop("t")
                self.lock.emit("ota", ev)
            u.on_connected()
        elif st == "offline":
            self.connected = False
            u.on_disconnected()
        elif data.get("ok") is True and "time" in data:
            u.on_answer()

    def poll(self, now) -> None:
        u = self.u
        if u is not _IDLE:
            u.poll(now)
            if u.idle():
                self._unload()

    def status(self) -> dict:
        return self.u.status()
