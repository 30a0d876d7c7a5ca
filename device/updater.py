"""Fetching a firmware release over the link (docs/ota.md), loaded by ota.py while there is one to fetch.

A release announcement (version, target, size, SHA-256, signature) passes the lock's rules (no downgrade
unless the release says so, size, target, not a version that failed here before), then the bundle is fetched
in chunks over the link into fw.bin, the progress persisted atomically after every chunk so a Wi-Fi drop or a
power cut resumes where it stopped; the whole file's SHA-256 is checked (a few blocks per main-loop pass: the
keypad and the relay keep working); then the release goes to the boot state as pending and the lock restarts
when the door is idle. The boot selector (bootsel.py) checks the Ed25519 signature and the hash again before
it unpacks the bundle into the spare slot and switches; the new version's first boot is trial.py's."""
import json
import os
import sys
from binascii import hexlify
from time import ticks_diff, ticks_ms

import bootstate
import filehash
import store
from fwreport import no_link, report
from version import VERSION

JOB = "ota.bin"          # the release being fetched: manifest fields + bytes received (store.py, atomic)
CHUNK = 256              # bytes per chunk request: 344 base64 characters, one string the link's worker
                         # allocates; 1 KB chunks failed (no_memory) in a heap fragmented beside the link
MAX_SIZE = 256 * 1024    # a larger bundle is refused (two slots + the archive fit a 2 MB flash)
DOWNGRADE = 1            # manifest flag: the release may replace a higher version
_RETRY_MS = 10000        # a chunk request unanswered this long is asked again


def target() -> str:
    """What the bundle's .mpy files must be compiled for: 'esp32' (xtensawin) or 'host' (the unix port)."""
    return "esp32" if sys.platform == "esp32" else "host"


def parse_version(v):
    """'1.2.3' -> (1, 2, 3); None unless dot-separated whole numbers (at most 4 parts)."""
    if not isinstance(v, str) or not v or len(v) > 32:
        return None
    out = []
    for p in v.split("."):
        if not p or not p.isdigit():
            return None
        out.append(int(p))
    return tuple(out) if len(out) <= 4 else None


class Updater:
    def __init__(self, lock, board, cfg: dict) -> None:
        self.lock = lock
        self.board = board
        self.has_key = bool(cfg.get("fw_pubkey"))
        self.send = no_link  # the link's send (ota.py sets it)
        self.boot = bootstate.load()
        self.job = None  # type: dict | None  # ver, target, size, sha, sig, flags, off, phase (download | hash)
        self.work = None  # the running hash (filehash.steps)
        self.connected = False
        self.asked = False  # a chunk request is out (sent at asked_at)
        self.asked_at = ticks_ms()
        self.reboot_due = None  # type: str | None  # why the lock must restart, once the door is idle
        self._load_job()

    # ---------------------------------------------------------------- inputs
    def on_message(self, obj: dict) -> None:
        """A "fw" or "fwchunk" body from the link (HMAC verified), on the main loop."""
        try:
            if obj.get("t") == "fw":
                self.on_release(*parse_release(obj))
            else:
                from binascii import a2b_base64

                ver, off, d = obj.get("ver"), obj.get("off"), obj.get("d")
                if isinstance(ver, str) and type(off) is int and isinstance(d, str):
                    self.on_chunk(ver, off, a2b_base64(d))
        except ValueError:
            pass  # malformed: nothing to act on (the cloud announces again at the next hello)

    def on_link(self, data: dict) -> None:
        """The link's events: connected, offline."""
        st = data.get("state")
        if st == "connected":
            self.on_connected()
        elif st == "offline":
            self.connected = False

    def on_connected(self) -> None:
        self.connected = True
        self.asked = False
        job = self.job
        if job is not None and job["phase"] == "download":
            report(self, "downloading", job["ver"], off=job["off"], size=job["size"])

    def on_release(self, ver: str, tgt: str, size: int, sha: bytes, sig: bytes, flags: int) -> None:
        job = self.job
        if ver == VERSION or (job is not None and job["ver"] == ver) or self.reboot_due is not None:
            return  # running it, fetching it, or restarting to install one
        reason = self._refusal(ver, tgt, size, flags)
        if reason is not None:
            self._refuse(ver, reason)
            return
        self.work = None  # a half-fetched older target is dropped: the cloud moved on
        self.job = {"ver": ver, "target": tgt, "size": size, "sha": hexlify(sha).decode(),
                    "sig": hexlify(sig).decode(), "flags": flags, "off": 0, "phase": "download"}
        self._save_job()
        self.asked = False
        report(self, "downloading", ver, off=0, size=size)

    def on_chunk(self, ver: str, off: int, data) -> None:
        job = self.job
        if job is None or job["phase"] != "download" or ver != job["ver"] or off != job["off"]:
            return  # a duplicate or a late answer: the request for the right offset is repeated
        if not data or len(data) > CHUNK or off + len(data) > job["size"]:
            self._fail("bad_chunk")
            return
        with open(bootstate.ARCHIVE, "r+b" if off else "wb") as f:
            f.seek(off)
            f.write(data)
        job["off"] = off + len(data)
        if job["off"] == job["size"]:
            job["phase"] = "hash"
        self._save_job()  # after the data: a cut in between only makes the same chunk come again
        self.asked = False
        if job["phase"] == "hash":
            self.work = filehash.steps(bootstate.ARCHIVE)

    # ---------------------------------------------------------------- main loop
    def poll(self, now) -> None:
        if self.work is not None:
            r = filehash.step(self.work)
            if r is not None:
                self.work = None
                if r[0]:
                    self._hashed(*r[1])
                else:
                    self._fail(r[1])
        job = self.job
        if job is not None and job["phase"] == "download" and self.connected:
            t = ticks_ms()
            if not self.asked or ticks_diff(t, self.asked_at) >= _RETRY_MS:
                if self.send({"v": 1, "t": "fwget", "ver": job["ver"], "off": job["off"],
                              "len": min(CHUNK, job["size"] - job["off"])}):
                    self.asked = True
                    self.asked_at = t
        if self.reboot_due and not self.lock.busy():
            self.board.reboot(self.reboot_due)

    def _hashed(self, digest, size: int) -> None:
        job = self.job
        if job is None:
            return
        if hexlify(digest).decode() != job["sha"] or size != job["size"]:
            self._fail("bad_hash")
            return
        # complete and intact: the boot selector checks the signature, unpacks and switches at the restart
        self.boot["pending"] = {k: job[k] for k in ("ver", "target", "size", "sha", "sig", "flags")}
        bootstate.save(self.boot)
        self.job = None
        store.remove(JOB)
        report(self, "downloaded", job["ver"])
        self.reboot_due = "update"

    # ---------------------------------------------------------------- outcomes
    def _refusal(self, ver, tgt, size, flags):
        new = parse_version(ver)
        if new is None:
            return "bad_version"
        if not self.has_key:
            return "no_key"
        if tgt != target():
            return "wrong_target"
        if not 0 < size <= MAX_SIZE:
            return "oversize"
        for past in (self.boot.get("last"), self.boot.get("refused")):
            if past and past["ver"] == ver:
                return "failed_before"
        if new <= (parse_version(VERSION) or ()) and not flags & DOWNGRADE:
            return "downgrade"
        return None

    def _refuse(self, ver, reason: str) -> None:
        report(self, "refused", ver, reason=reason)

    def _fail(self, reason: str) -> None:
        """The download went wrong: drop it (the cloud's next announcement starts over)."""
        ver = self.job["ver"] if self.job else None
        self.job = None
        self.work = None
        store.remove(JOB)
        _remove(bootstate.ARCHIVE)
        self._refuse(ver, reason)

    # ---------------------------------------------------------------- persistence
    def _load_job(self) -> None:
        job = store.load_dict(JOB)
        if job is None or job.get("ver") == VERSION or self.boot["trial"] or self.boot.get("pending"):
            store.remove(JOB)  # none, unreadable, finished (cut just before it was removed) or superseded
            return
        self.job = job
        if job["phase"] == "hash":  # the hash starts over from the downloaded archive
            self.work = filehash.steps(bootstate.ARCHIVE)

    def _save_job(self) -> None:
        store.save(JOB, json.dumps(self.job).encode())

    def idle(self) -> bool:
        """Nothing to do: ota.py may drop this module until the next announcement."""
        return self.job is None and self.work is None and self.reboot_due is None


def parse_release(obj):
    """A "fw" body -> the on_release arguments; raises ValueError when a field is missing or of a wrong type."""
    from binascii import unhexlify

    def field(key, kind):
        v = obj.get(key)
        if not isinstance(v, kind) or isinstance(v, bool):
            raise ValueError(key)
        return v

    sha = unhexlify(field("sha", str))
    sig = unhexlify(field("sig", str))
    if len(sha) != 32 or len(sig) != 64:
        raise ValueError("sha/sig")
    return field("ver", str), field("target", str), field("size", int), sha, sig, field("flags", int)


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass
