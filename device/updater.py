"""Over-the-air update of the application bundle (docs/ota.md), loaded by ota.py when there is work: checks a release
announcement (version, target, size, SHA-256, Ed25519 signature by the release key in the config), downloads
the bundle in chunks over the link into fw.bin (resuming where it stopped, progress persisted atomically),
verifies the hash, unpacks it into the spare slot, switches the boot state (bootstate.py) and reboots when the
door is idle; then, as the new version on trial, runs its self-check and confirms itself once the cloud has
answered its hello, or rolls back.

Everything heavy (signature, hash, unpack, self-check) runs as generators a few steps per main-loop pass, so
the keypad and the relay keep working; nothing here blocks on the network."""
import hashlib
import os
import sys
from binascii import hexlify, unhexlify
from time import ticks_add, ticks_diff, ticks_ms

import bootstate
import store
from ota import Idle
from version import VERSION

JOB = "ota.bin"          # the release being fetched: manifest fields + bytes received (store.py, atomic)
ARCHIVE = "fw.bin"       # the bundle as downloaded; kept until the new version is confirmed (self-check)
CHUNK = 1024             # bytes asked per chunk request: 1,368 base64 characters, one JSON string the
                         # worker allocates in a heap fragmented to ~2.7 KB blocks at 128k
MAX_SIZE = 256 * 1024    # a bundle larger than this is refused (two slots + the archive fit a 2 MB flash)
_RETRY_MS = 10000        # a chunk request unanswered this long is asked again
_STEPS = 8               # generator steps per main-loop pass (1 KB each for hash/unpack)
_CONFIRM_MIN = 10


def target() -> str:
    """What the bundle's .mpy files must be compiled for: 'esp32' (xtensawin) or 'host' (the unix port)."""
    return "esp32" if sys.platform == "esp32" else "host"


class Updater(Idle):
    def __init__(self, lock, board, cfg: dict) -> None:
        self.lock = lock
        self.board = board
        self.key = _hex(cfg.get("fw_pubkey"), 32)
        m = cfg.get("ota_confirm_minutes")
        self.confirm_ms = (m if type(m) is int and 0 < m <= 1440 else _CONFIRM_MIN) * 60000
        self.send = lambda obj: False  # set by the link: queue one uplink body (dict), True when queued
        self.boot = bootstate.load()
        self.job = None  # type: dict | None  # dict: ver, target, size, sha, sig, flags, off, phase ("download" | "hash" | "unpack")
        self.work = None  # the running generator (signature, hash, unpack or self-check)
        self.work_kind = None  # type: str | None
        self.pending = None  # type: dict | None  # an announcement whose signature is being checked
        self.connected = False
        self.asked = False  # a chunk request is out (sent at asked_at)
        self.asked_at = ticks_ms()
        self.error = None  # type: str | None
        self.reboot_due = None  # type: str | None  # why the lock must restart, once the door is idle
        self.answered = False
        self.checked = False
        self.t0 = ticks_ms()
        self._load_job()
        if self.boot["trial"]:
            import fwbundle

            self.boot["stage"] = "running"  # reached the main loop: a crash from now on is not "at boot"
            bootstate.save(self.boot)
            self._start(fwbundle.check_steps(ARCHIVE, bootstate.slot_dir(self.boot["slot"])), "self_check")

    # ---------------------------------------------------------------- inputs
    def on_connected(self) -> None:
        self.connected = True
        self.asked = False
        job = self.job
        if job is not None and job["phase"] == "download":
            self._report("downloading", job["ver"], off=job["off"], size=job["size"])

    def on_disconnected(self) -> None:
        self.connected = False

    def on_answer(self) -> None:
        """The cloud's signed answer to this session's hello arrived."""
        self.answered = True

    def on_release(self, ver: str, tgt: str, size: int, sha: bytes, sig: bytes, flags: int) -> None:
        """A verified-by-HMAC release announcement; its Ed25519 signature is checked before anything else."""
        job = self.job
        if ver == VERSION or (job is not None and job["ver"] == ver) or self.work is not None:
            return  # running it, fetching it, or busy checking (the cloud announces again at the next hello)
        import ed25519
        import fwbundle

        reason = self._refusal(ver, tgt, size, flags)
        if reason is not None:
            self._refuse(ver, reason)
            return
        msg = fwbundle.manifest(ver, tgt, size, sha, flags)
        if job is not None:  # the cloud's target moved on while this one was half fetched
            self.job = None
            store.remove(JOB)
        self.pending = {"ver": ver, "target": tgt, "size": size, "sha": hexlify(sha).decode(),
                        "sig": hexlify(sig).decode(), "flags": flags, "off": 0, "phase": "download"}
        self._start(ed25519.verify_steps(self.key, msg, sig), "signature")

    def on_chunk(self, ver: str, off: int, data) -> None:
        job = self.job
        if job is None or job["phase"] != "download" or ver != job["ver"] or off != job["off"]:
            return  # a duplicate or a late answer: the request for the right offset is repeated
        if not data or len(data) > CHUNK or off + len(data) > job["size"]:
            self._fail("bad_chunk")
            return
        with open(ARCHIVE, "r+b" if off else "wb") as f:
            f.seek(off)
            f.write(data)
        job["off"] = off + len(data)
        if job["off"] == job["size"]:
            job["phase"] = "hash"
        self._save_job()
        self.asked = False
        if job["phase"] == "hash":
            self._start(_hash_steps(ARCHIVE), "hash")

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
                _remove(ARCHIVE)
                self._report("confirmed", VERSION)
            elif ticks_diff(ticks_ms(), ticks_add(self.t0, self.confirm_ms)) >= 0:
                self._roll_back("no_ack")
        if self.reboot_due and not self.lock.busy():
            self.board.reboot(self.reboot_due)

    def _start(self, gen, kind: str) -> None:
        self.work = gen
        self.work_kind = kind

    def _step(self) -> None:
        import fwbundle

        kind = self.work_kind or ""
        gen = self.work
        # every generator ends by yielding its result; ending without one, or raising, is a failure (never a
        # pass: a signature check cut short by a MemoryError must not read as a valid signature)
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
        except fwbundle.BundleError as e:
            reason = e.args[0]
        except MemoryError:
            reason = "no_memory"
        except OSError:
            reason = "flash"
        self.work = None
        if kind == "self_check":
            self._roll_back("self_check:" + reason)
        elif kind == "signature":
            job = self.pending
            self.pending = None
            self._refuse(job["ver"] if job else None, reason)
        else:
            self._fail(reason)

    def _done(self, kind: str, r) -> None:
        if kind == "self_check":
            self.checked = True
            return
        job = self.pending if kind == "signature" else self.job
        if job is None:
            return
        if kind == "signature":
            self.pending = None
            for m in ("ed25519", "sha512"):  # their code goes back to the heap before the download
                sys.modules.pop(m, None)
            if r is not True:
                self._refuse(job["ver"], "bad_signature")
                return
            self.job = job
            self._save_job()
            self._report("downloading", job["ver"], off=0, size=job["size"])
        elif kind == "hash":
            if hexlify(r).decode() != job["sha"]:
                self._fail("bad_hash")
                return
            import fwbundle

            job["phase"] = "unpack"
            self._save_job()
            self._start(fwbundle.unpack_steps(ARCHIVE, bootstate.slot_dir(bootstate.spare(self.boot))), "unpack")
        elif kind == "unpack":
            ver = job["ver"]
            bootstate.stage(self.boot, bootstate.spare(self.boot), ver)
            bootstate.save(self.boot)  # the switch: from here the next boot runs the new version on trial
            self.job = None
            store.remove(JOB)
            self._report("staged", ver)
            self.reboot_due = "update"

    # ---------------------------------------------------------------- outcomes
    def _refusal(self, ver, tgt, size, flags):
        import fwbundle

        new = fwbundle.parse_version(ver)
        if new is None:
            return "bad_version"
        if self.key is None:
            return "no_key"
        if tgt != target():
            return "wrong_target"
        if not 0 < size <= MAX_SIZE:
            return "oversize"
        if self.boot["trial"]:
            return "on_trial"
        last = self.boot.get("last")
        if last and last["ver"] == ver:
            return "failed_before"
        cur = fwbundle.parse_version(VERSION) or ()
        if new <= cur and not flags & fwbundle.DOWNGRADE:
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
        _remove(ARCHIVE)
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
            import json

            job = json.loads(bytes(data))
        except ValueError:
            return
        if not isinstance(job, dict) or job.get("ver") == VERSION or self.boot["trial"]:
            store.remove(JOB)  # finished (the switch happened just before the cut) or superseded by a trial
            return
        self.job = job
        if job["phase"] != "download":  # hash and unpack start over from the downloaded archive
            job["phase"] = "hash"
            self._start(_hash_steps(ARCHIVE), "hash")

    def _save_job(self) -> None:
        import json

        store.save(JOB, json.dumps(self.job).encode())

    def idle(self) -> bool:
        """Nothing to do: ota.py may drop this module until the next announcement."""
        return (self.job is None and self.work is None and self.pending is None and not self.boot["trial"]
                and self.reboot_due is None)

    def status(self) -> dict:
        job = self.job
        return {"version": VERSION, "trial": self.boot["trial"], "rollbacks": self.boot["rollbacks"],
                "target": job["ver"] if job else None, "phase": job["phase"] if job else self.work_kind,
                "progress": job["off"] if job else None, "error": self.error}


def parse_release(obj):
    """A "fw" body -> the on_release arguments; raises ValueError when a field is missing or of a wrong type."""
    def field(key, kind):
        v = obj.get(key)
        if not isinstance(v, kind) or isinstance(v, bool):
            raise ValueError(key)
        return v

    sha = _hex(field("sha", str), 32)
    sig = _hex(field("sig", str), 64)
    if sha is None or sig is None:
        raise ValueError("sha/sig")
    return field("ver", str), field("target", str), field("size", int), sha, sig, field("flags", int)


def _hash_steps(path: str):
    h = hashlib.sha256()
    buf = bytearray(1024)
    with open(path, "rb") as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            h.update(memoryview(buf)[:n])
            yield None
    yield h.digest()


def _hex(s, n: int):
    try:
        b = unhexlify(s)
    except (ValueError, TypeError):
        return None
    return b if len(b) == n else None


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass
