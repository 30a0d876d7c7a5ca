"""Firmware updates, the part that stays loaded (docs/ota.md): plugs the update messages into the link, tells
the cloud what the boot selector decided (a rollback, a refused release) at every connection, and loads the
rest only while there is work: updater.py for an announcement or a fetch to resume, trial.py for the first
boot of a new version. Kept small: at 128k the link leaves the rest of the firmware a few KB of heap, in
fragments, and each connection (its TLS handshake) needs a few KB in one piece."""
import sys

from store import exists

# free heap (after a collect) an announcement needs before the updater is loaded: its modules (9.8 KB on the
# unix port), a chunk's strings, and the few KB in one piece the link's next connection needs. Below it the
# release is refused (no_memory) rather than starving the link: the lock stays online and the cloud shows why.
NEED = 16 * 1024


class Msg:
    """A verified-by-HMAC "fw" or "fwchunk" body, handed from the link's worker to the main loop."""

    def __init__(self, obj) -> None:
        self.obj = obj


class Ota:
    def __init__(self, lock, board, cfg: dict) -> None:
        self.lock = lock
        self.board = board
        self.cfg = cfg
        self.send = None  # the link's send, once attached
        self.connected = False
        self.u = None  # the Updater or the Trial while there is work
        self.tell = ()  # the boot selector's decisions (fwreport.report() arguments), told at every connection
        self.trial = None  # the boot state, when this boot is a new version's trial
        work = exists("ota.bin")
        if exists("boot.bin"):
            import fwreport

            self.trial, self.tell = fwreport.boot_decisions()
        if work or self.trial:
            self._load()
        else:
            self._drop()

    def _load(self):
        u = self.u
        if u is None:
            u = self._new()
            if self.send is not None:
                u.send = self.send
            if self.connected:
                u.on_link({"state": "connected"})
            self.u = u
        return u

    def _new(self):
        if self.trial is not None:
            from trial import Trial

            return Trial(self.lock, self.board, self.cfg, self.trial)
        from updater import Updater

        return Updater(self.lock, self.board, self.cfg)

    def attach(self, link) -> None:
        """The two downlink types (parsed in the link's worker thread), their handler on the main loop, the
        link's send, and its events (connected, offline, the signed time answering the hello)."""
        dl = link.session.downlink
        dl.parser("fw", Msg)
        dl.parser("fwchunk", Msg)
        link.handle(Msg, self._on_msg)
        self.send = link.send
        if self.u is not None:
            self.u.send = link.send
        self.lock.add_listener(self._on_event)

    def _on_msg(self, msg, now) -> None:
        obj = msg.obj
        if self.u is None:
            import gc

            gc.collect()
            if gc.mem_free() < NEED:
                ver = obj.get("ver")
                if obj.get("t") == "fw" and isinstance(ver, str):
                    from fwreport import report

                    report(self, "refused", ver, reason="no_memory")
                    if not self.tell:
                        sys.modules.pop("fwreport", None)
                return
        self._load().on_message(obj)

    def _on_event(self, event: str, data: dict) -> None:
        if event == "link":
            st = data.get("state")
            if st is not None:
                self.connected = st == "connected"
            if st == "connected":
                # at every connection, not once: a report queued just before a session ends is lost with it
                # (the cloud counts a rollback once)
                if self.tell:
                    from fwreport import report

                    for ev in self.tell:
                        report(self, **ev)
            if self.u is not None:
                self.u.on_link(data)

    def _drop(self) -> None:
        """Forget the update modules (their code is most of their heap); the next announcement loads them
        again. The reports' module stays while this boot has something to tell at every connection."""
        for m in ("updater", "trial", "fwbundle", "filehash", "bootstate"):
            sys.modules.pop(m, None)
        if not self.tell:
            sys.modules.pop("fwreport", None)

    def poll(self, now) -> None:
        u = self.u
        if u is not None:
            u.poll(now)
            if u.idle():
                self.u = None
                self.trial = None  # a trial ends confirmed (idle) or by a restart
                self._drop()
