"""Over-the-air update of the application bundle (docs/ota.md), loaded by ota.py while there is work.

Fetching: a release announcement (version, target, size, SHA-256, signature) passes the lock's rules (no
downgrade unless the release says so, size, target, not a version that failed here before), then the bundle
is fetched in chunks over the link into fw.bin, the progress persisted atomically after every chunk so a
Wi-Fi drop or a power cut resumes where it stopped; the whole file's SHA-256 is checked; then the release goes
to the boot state as pending and the lock restarts when the door is idle. The boot selector (bootsel.py)
checks the Ed25519 signature and the hash again before it unpacks the bundle into the spare slot and switches.

On trial (the first boot of a new version): the self-check (every file of the slot against the archive), then
the cloud's signed answer to the hello confirms the version; a failed self-check or no answer in time rolls it
back. The hash and the self-check run a few steps per main-loop pass: the keypad and the relay keep working."""
import json
import os
import sys
from binascii import hexlify
from time import ticks_add, ticks_diff, ticks_ms

import bootstate
import filehash
import store
from ota import Idle
from version import VERSION

JOB = "ota.bin"          # the release being fetched: manifest fields + bytes received (store.py, atomic)
CHUNK = 256              # bytes per chunk request: 344 base64 characters, one string the link's worker
                         # allocates; 1 KB chunks failed (no_memory) in a heap fragmented beside the link
MAX_SIZE = 256 * 1024    # a larger bundle is refused (two slots + the archive fit a 2 MB flash)
DOWNGRADE = 1            # manifest flag: the release may replace a higher version
_RETRY_MS = 10000        # a chunk request unanswered this long is asked again
_STEPS = 8               # hash / self-check steps (1 KB each) per main-loop pass
_CONFIRM_MIN = 10


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


class Updater(Idle):
    def __init__(self, lock, board, cfg: dict) -> None:
        self.lock = lock
        self.board = board
        self.has_key = bool(cfg.get("fw_pubkey"))
        m = cfg.get("ota_confirm_minutes")
        self.confirm_ms = (m if type(m) is int and 0 < m <= 1440 else _CONFIRM_MIN) * 60000
        self.send = lambda obj: False  # the link's send (ota.py sets it)
        self.boot = bootstate.load()
        self.job = None  # type: dict | None  # ver, target, size, sha, sig, flags, off, phase (download | hash)
        self.work = None  # the running generator: the hash, or the self-check
        self.work_kind = ""
        self.connected = False
        self.asked = False  # a chunk request is out (sent at asked_at)
        self.asked_at = ticks_ms()
        self.error = None  # type: str | None
        self.reboot_due = None  # type: str | None  # why the lock must restart, once the door is idle
        self.answered = False
        self.checked = False
        self.told = not (self.boot.get("last") or self.boot.get("refused"))  # reported since loaded
        self.t0 = ticks_ms()
        self._load_job()
        if self.boot["trial"]:
            import fwbundle

            self.boot["stage"] = "running"  # reached the main loop: a crash from now on is not "at boot"
            bootstate.save(self.boot)
            self._start(fwbundle.check_steps(bootstate.ARCHIVE, bootstate.slot_dir(self.boot["slot"])), "self_check")

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
        """The link's events: connected, offline, and the signed time answering this session's hello."""
        st = data.get("state")
        if st == "connected":
            self.on_connected()
        elif st == "offline":
            self.connected = False
        elif data.get("ok") is True and "time" in data:
            self.answered = True

    def on_connected(self) -> None:
        self.connected = True
        self.asked = False
        job = self.job
        if job is not None and job["phase"] == "download":
            self._report("downloading", job["ver"], off=job["off"], size=job["size"])
        if self.boot["trial"]:
            self._report("trial", VERSION)
        # what the boot selector decided, told on every connection (the cloud counts each event once)
        last = self.boot.get("last")
        if last:
            self._report("rolled_back", last["ver"], reason=last["reason"], rollbacks=self.boot["rollbacks"])
        refused = self.boot.get("refused")
        if refused:
            self._report("refused", refused["ver"], reason=refused["reason"])
        self.told = True

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
        self._report("downloading", ver, off=0, size=size)

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
            self._start(filehash.steps(bootstate.ARCHIVE), "hash")

    # ---------------------------------------------------------------- main loop
    def poll(self, now) -> None:
        if self.work is not None:
            self._step()
        job = self.job
        if job is not None and job["phase"] == "download" and self.connected:
            t = ticks_ms()
            if not self.asked or ticks_diff(t, self.asked_at) >= _RETRY_MS:
                if self.send({"v": 1, "t": "fwget", "ver": job["ver"], "off": job["off"],
                              "len": min(CHUNK, job["size"] - job["off"])}):
                    self.asked = True
                    self.asked_at = t
        if self.boot["trial"]:
            if self.checked and self.answered:
                bootstate.confirm(self.boot)
                bootstate.save(self.boot)
                _remove(bootstate.ARCHIVE)
                self._report("confirmed", VERSION)
            elif ticks_diff(ticks_ms(), ticks_add(self.t0, self.confirm_ms)) >= 0:
                self._roll_back("no_ack")
        if self.reboot_due and not self.lock.busy():
            self.board.reboot(self.reboot_due)

    def _start(self, gen, kind: str) -> None:
        self.work = gen
        self.work_kind = kind

    def _step(self) -> None:
        kind = self.work_kind
        gen = self.work
        # every generator ends by yielding its result; ending without one, or raising, is a failure
        try:
            for _ in range(_STEPS):
                r = next(gen)  # type: ignore
                if r is not None:
                    self.work = None
                    self._done(kind, r)
                    return
            return
        except StopIteration:
            reason = "interrupted"
        except MemoryError:
            reason = "no_memory"
        except OSError:
            reason = "flash"
        except Exception as e:  # fwbundle.BundleError: its reason
            reason = str(e.args[0]) if e.args else "bad_archive"
        self.work = None
        if kind == "self_check":
            self._roll_back("self_check:" + reason)
        else:
            self._fail(reason)

    def _done(self, kind: str, r) -> None:
        if kind == "self_check":
            self.checked = True
            return
        job = self.job
        if job is None:
            return
        if hexlify(r[0]).decode() != job["sha"] or r[1] != job["size"]:
            self._fail("bad_hash")
            return
        # complete and intact: the boot selector checks the signature, unpacks and switches at the restart
        self.boot["pending"] = {k: job[k] for k in ("ver", "target", "size", "sha", "sig", "flags")}
        bootstate.save(self.boot)
        self.job = None
        store.remove(JOB)
        self._report("downloaded", job["ver"])
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
        if self.boot["trial"]:
            return "on_trial"
        for past in (self.boot.get("last"), self.boot.get("refused")):
            if past and past["ver"] == ver:
                return "failed_before"
        if new <= (parse_version(VERSION) or ()) and not flags & DOWNGRADE:
            return "downgrade"
        return None

    def _refuse(self, ver, reason: str) -> None:
        self.error = reason
        self._report("refused", ver, reason=reason)

    def _fail(self, reason: str) -> None:
        """The download went wrong: drop it (the cloud's next announcement starts over)."""
        ver = self.job["ver"] if self.job else None
        self.job = None
        self.work = None
        store.remove(JOB)
        _remove(bootstate.ARCHIVE)
        self._refuse(ver, reason)

    def _roll_back(self, reason: str) -> None:
        self.work = None
        bootstate.rollback(self.boot, reason, self.lock.boot_count)
        bootstate.save(self.boot)
        self.error = reason
        self.reboot_due = "rollback"

    def _report(self, state: str, ver, **extra) -> None:
        """Tell the cloud (fwstatus) and the lock's listeners ("ota" events, shown by the simulator)."""
        body = {"v": 1, "t": "fwstatus", "state": state, "ver": ver, "fw": VERSION}
        body.update(extra)
        self.send(body)
        ev = {"state": state, "ver": ver}
        ev.update(extra)
        try:
            self.lock.emit("ota", ev)
        except Exception:  # a listener's fault must not stop an update
            pass

    # ---------------------------------------------------------------- persistence
    def _load_job(self) -> None:
        data = store.load(JOB)
        if data is None:
            return
        try:
            job = json.loads(bytes(data))
        except ValueError:
            job = None
        if not isinstance(job, dict) or job.get("ver") == VERSION or self.boot["trial"] or self.boot.get("pending"):
            store.remove(JOB)  # finished (cut just before it was removed) or superseded
            return
        self.job = job
        if job["phase"] == "hash":  # the hash starts over from the downloaded archive
            self._start(filehash.steps(bootstate.ARCHIVE), "hash")

    def _save_job(self) -> None:
        store.save(JOB, json.dumps(self.job).encode())

    def idle(self) -> bool:
        """Nothing to do: ota.py may drop this module until the next announcement."""
        return (self.job is None and self.work is None and not self.boot["trial"] and self.reboot_due is None
                and self.told)

    def status(self) -> dict:
        job = self.job
        return {"version": VERSION, "trial": self.boot["trial"], "rollbacks": self.boot["rollbacks"],
                "target": job["ver"] if job else None, "phase": job["phase"] if job else self.work_kind or None,
                "progress": job["off"] if job else None, "error": self.error}


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
