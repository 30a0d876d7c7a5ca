"""The fetching boot's work (docs/ota.md, "Fetching"): loaded by ota.py when ota.bin holds a fetch job, which
the boot selector wrote after it accepted an announced release (bootinstall.py, fwrules.py).

The bundle is fetched over the link in chunks into fw.bin, the progress persisted atomically after every
chunk so a Wi-Fi drop or a power cut resumes where it stopped; then the whole file's SHA-256 is checked (a few
blocks per main-loop pass: the keypad and the relay keep working) and the release goes to the boot state as
pending. The boot selector checks the Ed25519 signature and the hash again before it unpacks the bundle.

Every fetching boot ends with a restart, once the door is idle: into the selector's install; or, the job
dropped, back into a normal boot (its link's full receiving buffer) when the fetch failed (the reason kept in
the boot state, told to the cloud at every connection), stalled (no chunk for _STALL_MS while connected: the
cloud stopped the rollout) or the cloud announced another release."""
import json
from binascii import hexlify
from time import ticks_add, ticks_diff, ticks_ms

from micropython import const

import filehash
import store
from fwreport import report

# files: ota.bin, the job (its manifest fields, bytes received, boots: ota.py and bootinstall.py name it
# too); fw.bin, the archive (bootstate.ARCHIVE); boot.bin, the boot state (bootstate.NAME). Literals, not
# module names: every name is heap on the board, never freed (docs/firmware.md, "The qstr pool").
_CHUNK = const(256)        # bytes per chunk request: 344 base64 characters, one string the link's worker
                           # allocates; 1 KB chunks failed (no_memory) in a heap fragmented beside the link
_RETRY_MS = const(10000)   # a chunk request unanswered this long is asked again
_STALL_MS = const(600000)  # connected this long without a chunk: the cloud gave the release up
_GRACE_MS = const(2000)    # the last report's time to leave before the restart


class Updater:
    """The fetch of the job in ota.bin: downloading while off < size, then hashing fw.bin."""

    def __init__(self, lock, board, cfg: dict) -> None:
        self.lock = lock
        self.board = board
        self.send = lambda obj: False  # the link's send (ota.py sets it)
        self.work = None  # the running hash (filehash.steps)
        self.connected = False
        self.asked_at = ticks_add(ticks_ms(), -_RETRY_MS)  # when the chunk request out was sent (long ago: ask)
        self.last = ticks_ms()  # the last progress (a chunk, a connection): the stall's clock
        self.due = False  # the restart that ends this boot is due at due_at (then: once the door is idle)
        self.due_at = ticks_ms()
        job = store.load_dict("ota.bin")
        try:  # a job as the selector writes it (the selector checks the manifest fields at the install)
            ok = (isinstance(job["ver"], str) and type(job["size"]) is int and type(job["off"]) is int
                  and 0 <= job["off"] <= job["size"] and isinstance(job["sha"], str))
        except (KeyError, TypeError):
            ok = False
        self.job = job if ok else None  # type: dict | None
        if not ok:
            self._end()  # ota.update_boot() read it: only a flash gone bad since gets here
        elif job["off"] == job["size"]:  # downloaded: the hash starts over from the archive
            self.work = filehash.steps("fw.bin")

    # ---------------------------------------------------------------- inputs
    def on_message(self, obj: dict) -> None:
        """A "fw" or "fwchunk" body from the link (HMAC verified), on the main loop."""
        job = self.job
        ver = obj.get("ver")
        if job is None or ver != job["ver"]:
            if job is not None and obj.get("t") == "fw" and isinstance(ver, str):
                report(self, "dropped", job["ver"])
                self._end()  # the cloud moved on: the normal boot takes the new release
            return
        off, d = obj.get("off"), obj.get("d")
        if type(off) is not int or not isinstance(d, str) or off != job["off"] or off == job["size"]:
            return  # the announcement again, a duplicate or a late answer: the right offset is asked again
        from binascii import a2b_base64

        try:
            data = a2b_base64(d)
        except ValueError:
            return  # malformed: the request is repeated
        if not data or len(data) > _CHUNK or off + len(data) > job["size"]:
            self._end("bad_chunk")
            return
        with open("fw.bin", "r+b" if off else "wb") as f:
            f.seek(off)
            f.write(data)
        job["off"] = off = off + len(data)
        job["boots"] = 0  # progress: the boots counted without any start again
        # after the data: a cut in between only makes the same chunk come again
        store.save("ota.bin", json.dumps(job).encode())
        self.asked_at = ticks_add(ticks_ms(), -_RETRY_MS)
        self.last = ticks_ms()
        if off == job["size"]:
            self.work = filehash.steps("fw.bin")

    def on_link(self, data: dict) -> None:
        """The link's events: connected, offline."""
        st = data.get("state")
        if st == "connected":
            self.connected = True
            self.asked_at = ticks_add(ticks_ms(), -_RETRY_MS)
            self.last = ticks_ms()
            job = self.job
            if job is not None and job["off"] < job["size"]:
                report(self, "downloading", job["ver"], off=job["off"], size=job["size"])
        elif st == "offline":
            self.connected = False

    # ---------------------------------------------------------------- main loop
    def poll(self, now) -> None:
        t = ticks_ms()
        job = self.job
        if self.due:
            if ticks_diff(t, self.due_at) >= 0 and not self.lock.busy():
                self.board.reboot("update")
        elif self.work is not None and job is not None:
            r = filehash.step(self.work)
            if r is None:
                return
            self.work = None
            if not r[0]:
                self._end(r[1])
            elif hexlify(r[1][0]).decode() != job["sha"] or r[1][1] != job["size"]:
                self._end("bad_hash")
            else:
                # complete and intact: the boot selector checks the signature, unpacks and switches at the
                # restart (the job is the manifest it checks; the job's own fields ride along)
                store.put("boot.bin", "pending", job)
                report(self, "downloaded", job["ver"])
                self._end(pending=True)
        elif job is not None and self.connected:
            if ticks_diff(t, self.last) >= _STALL_MS:
                report(self, "stalled", job["ver"], off=job["off"])
                self._end()
            elif ticks_diff(t, self.asked_at) >= _RETRY_MS:
                if self.send({"v": 1, "t": "fwget", "ver": job["ver"], "off": job["off"],
                              "len": min(_CHUNK, job["size"] - job["off"])}):
                    self.asked_at = t

    def _end(self, refused=None, pending=False) -> None:
        """The end of this fetching boot: drop the job, and its archive unless it is pending; a refusal (the
        download went wrong) is kept in the boot state, so the normal boot tells the cloud at every connection
        and does not fetch this version again. The restart is due."""
        job = self.job
        if refused is not None and job is not None:
            store.put("boot.bin", "refused", {"ver": job["ver"], "reason": refused})
            report(self, "refused", job["ver"], reason=refused)
        self.work = None
        self.job = None
        store.remove("ota.bin")
        if not pending:
            store.remove("fw.bin")
        self.due = True
        self.due_at = ticks_add(ticks_ms(), _GRACE_MS)
