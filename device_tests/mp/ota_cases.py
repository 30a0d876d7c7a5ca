"""Firmware updates on the unix port under the heap cap: the Ed25519 verifier against PyNaCl, the updater's
path from announcement to staged slot, its refusals, power cuts at random file operations, the boot
selector's trial and rollback, the self-check. The fixture (keys, signed releases, archives) is made by
device_tests/test_ota.py with the cloud's own release code and PyNaCl."""
import json
import os
import random
from binascii import unhexlify

import bootinstall
import bootsel
import bootstate
import ed25519
import fwbundle
import ota
import powercut
import store
import trial
import updater
from powercut import Cutter, PowerCut

FIX = json.load(open(os.getenv("OTA_FIXTURE")))
ROOT = os.getenv("TEST_TMP")
PUB = FIX["pubkey"]
_n = [0]


def _rmtree(path):
    try:
        fwbundle.remove_tree(path)
    except OSError:
        pass


def fresh():
    os.chdir(ROOT)
    _n[0] += 1
    d = ROOT + "/ota%d" % _n[0]
    _rmtree(d)
    os.mkdir(d)
    os.chdir(d)
    with open("config.json", "w") as f:
        json.dump({"fw_pubkey": PUB}, f)


class FakeLock:
    boot_count = 3

    def __init__(self):
        self.listeners = []

    def busy(self):
        return False

    def add_listener(self, fn):
        self.listeners.append(fn)

    def emit(self, event, data):
        for fn in self.listeners:
            fn(event, data)


class FakeBoard:
    def __init__(self):
        self.reboots = []

    def reboot(self, reason):
        self.reboots.append(reason)


class Rig:
    """An updater wired to a fake link that answers its chunk requests from a release's archive."""

    def __init__(self, rel=None):
        self.lock = FakeLock()
        self.board = FakeBoard()
        self.sent = []
        self.status = []
        self.u = updater.Updater(self.lock, self.board, {"fw_pubkey": PUB})
        self.u.send = self._send
        self.rel = rel
        self.u.on_connected()

    def _send(self, obj):
        self.sent.append(obj)
        if obj["t"] == "fwstatus":
            self.status.append(obj)
        return True

    def announce(self, rel=None):
        r = rel or self.rel
        self.u.on_release(r["ver"], r["target"], r["size"], unhexlify(r["sha"]), unhexlify(r["sig"]), r["flags"])

    def run(self, passes=4000):
        """Poll, answering every chunk request, until the updater wants to reboot or goes quiet."""
        for _ in range(passes):
            n = len(self.sent)
            self.u.poll(0)
            for m in self.sent[n:]:
                if m["t"] == "fwget":
                    self.serve(m)
            del self.sent[n:]  # keep only the reports (the test's own heap is capped too)
            if self.board.reboots:
                return

    def serve(self, m):
        with open(self.rel["archive"], "rb") as f:
            f.seek(m["off"])
            data = f.read(m["len"])
        self.u.asked = False
        self.u.on_chunk(m["ver"], m["off"], data)

    def reports(self, state=None):
        return [m for m in self.status if state is None or m["state"] == state]


class TrialRig(Rig):
    """The new version's first boot: the Trial ota.py loads then, with the same fake link."""

    def __init__(self):
        self.lock = FakeLock()
        self.board = FakeBoard()
        self.sent = []
        self.status = []
        self.u = trial.Trial(self.lock, self.board, {"fw_pubkey": PUB}, bootstate.load())
        self.u.send = self._send
        self.u.on_link({"state": "connected"})


def _boot_select():
    """What boot.py does at power-up (without running the slot): (slot directory or None, on trial)."""
    import sys

    import bootsel

    path = list(sys.path)
    restarts = []
    real = bootinstall._restart

    def restart():
        restarts.append(bootstate.load()["stage"])
        raise _Restart()

    bootinstall._restart = restart
    try:
        while True:  # the board resets and boots again until the selector hands over
            try:
                trial = bootsel.choose(set(sys.modules), "")
                break
            except _Restart:
                sys.path[:] = path
    finally:
        bootinstall._restart = real
    RESTARTS[:] = restarts
    d = sys.path[0] if sys.path[0].startswith("app/") else None
    sys.path[:] = path
    return d, trial


class _Restart(Exception):
    pass


RESTARTS = []  # the boot stage saved before each restart of the last _boot_select


def _slot_ok(slot, archive):
    for _ in fwbundle.check_steps(archive, bootstate.slot_dir(slot)):
        pass
    return True


def test_ed25519_against_pynacl():
    for line in open(FIX["vectors"]):
        pk, msg, sig, valid = line.split()
        valid = valid == "1"
        assert ed25519.verify(unhexlify(pk), unhexlify(msg.replace("-", "")), unhexlify(sig)) == valid, (pk, msg, sig, valid)


def test_sha512_against_hashlib():
    import sha512

    for line in open(FIX["sha512"]):
        msg, want = line.split()
        assert sha512.sha512(unhexlify(msg.replace("-", ""))) == unhexlify(want), len(msg)


def test_update_is_fetched_then_installed_by_the_selector():
    fresh()
    r = Rig(FIX["releases"]["good"])
    r.announce()
    r.run()
    assert r.board.reboots[0] == "update", r.status
    st = bootstate.load()
    assert st["pending"]["ver"] == r.rel["ver"] and st["slot"] is None  # nothing switched yet
    assert r.reports("downloaded") and not r.reports("refused")
    d, trial = _boot_select()
    st = bootstate.load()
    assert d == "app/a" and trial and st["slot"] == "a" and st["ver"] == r.rel["ver"] and st["good"] is None
    assert st["pending"] is None and _slot_ok("a", r.rel["archive"])
    # installed and checked, then one restart: the trial starts on a heap without the install's names
    assert RESTARTS == ["checked"] and st["stage"] == "booting" and st["tries"] == 1, (RESTARTS, st)


def _refused_at_boot(rel_name, want):
    fresh()
    r = Rig(FIX["releases"][rel_name])
    r.announce()
    r.run()
    d, trial = _boot_select()
    st = bootstate.load()
    assert d is None and not trial and st["slot"] is None, st  # the running version is untouched
    assert st["refused"] == {"ver": r.rel["ver"], "reason": want}, st
    assert not os.listdir("app") if "app" in os.listdir() else True
    sent = _told()
    assert [(m["state"], m["ver"], m["reason"]) for m in sent] == [("refused", r.rel["ver"], want)] * 2, sent
    # and the same version is not fetched again
    g = Rig(FIX["releases"][rel_name])
    assert not g.reports()  # the updater itself repeats nothing
    g.announce()
    assert g.reports("refused")[-1]["reason"] == "failed_before"


def _told():
    """What the resident part tells the cloud over two connections, after this boot's selector ran."""
    sent = []
    shim = ota.Ota(FakeLock(), FakeBoard(), {"fw_pubkey": PUB})
    shim.send = lambda obj: sent.append(obj) or True
    assert shim.u is None  # reports need no updater
    for _ in range(2):  # every connection: a report lost with a session comes again with the next one
        shim._on_event("link", {"state": "connected"})
        shim._on_event("link", {"state": "offline"})
    return sent


def _refused(rel_name, want):
    fresh()
    r = Rig(FIX["releases"][rel_name])
    r.announce()
    r.run(2000)
    got = [m["reason"] for m in r.reports("refused")]
    assert got == [want], (rel_name, got)
    assert not r.board.reboots
    assert bootstate.load()["slot"] is None and bootstate.load()["pending"] is None


def test_bad_signature_refused():
    _refused_at_boot("bad_sig", "bad_signature")


def test_wrong_hash_refused():
    _refused("bad_hash", "bad_hash")


def test_downgrade_refused():
    _refused("old", "downgrade")


def test_wrong_target_refused():
    _refused("esp32", "wrong_target")


def test_the_resident_part_loads_the_updater_only_for_work():
    fresh()
    shim = ota.Ota(FakeLock(), FakeBoard(), {"fw_pubkey": PUB})
    assert shim.u is None  # a lock never updated: nothing but the resident part
    shim._on_msg(ota.Msg({"t": "fw", "ver": "0.2.0"}), 0)  # malformed: no sha/sig
    assert shim.u is not None
    shim.poll(0)
    assert shim.u is None  # idle again: dropped


def test_an_announcement_the_heap_cannot_take_is_refused_not_loaded():
    fresh()
    sent = []
    shim = ota.Ota(FakeLock(), FakeBoard(), {"fw_pubkey": PUB})
    shim.send = lambda obj: sent.append(obj) or True
    need = ota.NEED
    ota.NEED = 10**9  # more than any heap
    try:
        rel = FIX["releases"]["good"]
        shim._on_msg(ota.Msg({"t": "fw", "ver": rel["ver"], "sha": rel["sha"]}), 0)
        shim._on_msg(ota.Msg({"t": "fwchunk", "ver": rel["ver"], "off": 0, "d": ""}), 0)
    finally:
        ota.NEED = need
    assert shim.u is None  # the updater was not loaded
    assert [(m["state"], m["reason"]) for m in sent] == [("refused", "no_memory")], sent


def test_oversize_refused():
    fresh()
    r = Rig(FIX["releases"]["good"])
    rel = dict(r.rel)
    rel["size"] = updater.MAX_SIZE + 1
    r.announce(rel)
    assert [m["reason"] for m in r.reports("refused")] == ["oversize"]


_MODS = (updater, fwbundle, store, bootsel, bootinstall)


def _install(cut):
    powercut.install(cut, _MODS)


def _uninstall():
    powercut.uninstall(_MODS)


def test_power_cut_at_random_points_leaves_a_bootable_lock():
    """Cuts while fetching, while the selector installs, while it switches: the boot state always names the
    factory application or a complete slot, and with the power back the update completes."""
    rel = FIX["releases"]["good"]
    random.seed(7)
    total = 0
    for trial in range(int(os.getenv("OTA_CUTS") or "25")):
        fresh()
        n = random.getrandbits(16) % 160 + 1
        for _ in range(20):
            cut = Cutter(n)
            _install(cut)
            try:
                if not bootstate.load()["pending"]:
                    r = Rig(rel)
                    r.announce()
                    r.run()
                _boot_select()
            except PowerCut:
                total += 1
            finally:
                _uninstall()
            st = bootstate.load()
            assert st["slot"] is None or _slot_ok(st["slot"], rel["archive"]), (trial, n, st)
            if st["slot"] == "a":
                break
            n = 10**9  # power back: no more cuts, it must resume and finish
        st = bootstate.load()
        assert st["slot"] == "a" and st["ver"] == rel["ver"], (trial, n, st)
    assert total > 0


def test_resume_asks_from_where_it_stopped():
    fresh()
    rel = FIX["releases"]["good"]
    r = Rig(rel)
    r.announce()
    for _ in range(100):  # signature, then three chunks
        n = len(r.sent)
        r.u.poll(0)
        for m in r.sent[n:]:
            if m["t"] == "fwget" and m["off"] < 3 * updater.CHUNK:
                r.serve(m)
    r2 = Rig(rel)  # a reboot: a new updater reading ota.bin
    r2.u.poll(0)
    gets = [m for m in r2.sent if m["t"] == "fwget"]
    assert gets and gets[0]["off"] == 3 * updater.CHUNK, gets


def test_selector_trial_then_rollback_when_not_confirmed():
    fresh()
    r = Rig(FIX["releases"]["good"])
    r.announce()
    r.run()
    d, trial = _boot_select()
    assert d == "app/a" and trial
    # it crashed before the updater ran (stage still "booting"): the next boot rolls back
    d, trial = _boot_select()
    st = bootstate.load()
    assert d is None and not trial and st["rollbacks"] == 1 and st["last"]["reason"] == "crash_at_boot", st


def test_trial_confirms_after_self_check_and_signed_answer():
    fresh()
    r = Rig(FIX["releases"]["good"])
    r.announce()
    r.run()
    _boot_select()
    t = TrialRig()
    assert bootstate.load()["stage"] == "running" and t.reports("trial")
    for _ in range(200):
        t.u.poll(0)
    assert bootstate.load()["trial"]  # self-check passed, but no signed answer yet
    t.u.on_link({"time": 1, "ok": True})
    t.u.poll(0)
    st = bootstate.load()
    assert not st["trial"] and st["good"] == "a" and t.reports("confirmed"), st
    # a reboot now keeps the new version
    d, trial = _boot_select()
    assert d == "app/a" and not trial


def test_failed_self_check_rolls_back():
    """The selector checks the new version's files against the archive before its one boot on trial."""
    fresh()
    r = Rig(FIX["releases"]["good"])
    r.announce()
    r.run()
    st = bootstate.load()
    bootinstall._install(bootstate, st)  # installed, then the flash spoils a file before the trial's boot
    bootstate.save(st)
    with open("app/a/lock.mpy", "r+b") as f:
        f.seek(10)
        f.write(b"\x00\x01\x02")
    d, trial = _boot_select()
    st = bootstate.load()
    assert d is None and not trial and st["slot"] is None and st["last"]["reason"] == "self_check:bad_file_hash", st
    sent = _told()  # the last good version tells it at every connection
    assert [(m["state"], m["reason"]) for m in sent] == [("rolled_back", "self_check:bad_file_hash")] * 2, sent


def test_no_signed_answer_in_time_rolls_back():
    fresh()
    r = Rig(FIX["releases"]["good"])
    r.announce()
    r.run()
    _boot_select()
    t = TrialRig()
    t.u.confirm_ms = 0
    t.u.poll(0)
    st = bootstate.load()
    assert st["slot"] is None and st["last"]["reason"] == "no_ack" and t.board.reboots
    # the good version reports the rollback at every connection
    sent = _told()
    assert [(m["state"], m["reason"], m["rollbacks"]) for m in sent] == [("rolled_back", "no_ack", 1)] * 2, sent
    g = Rig(FIX["releases"]["good"])
    # and refuses the failed version if it is announced again
    g.announce()
    assert g.reports("refused")[-1]["reason"] == "failed_before"


def test_a_signature_check_cut_short_is_a_refusal_not_a_pass():
    fresh()
    r = Rig(FIX["releases"]["good"])
    r.announce()
    r.run()
    real = ed25519._add
    calls = [0]

    def failing(p, q):
        calls[0] += 1
        if calls[0] == 60:
            raise MemoryError()
        return real(p, q)

    ed25519._add = failing
    try:
        d, trial = _boot_select()
    finally:
        ed25519._add = real
    st = bootstate.load()
    assert calls[0] >= 60 and d is None and st["slot"] is None
    assert st["refused"] == {"ver": "0.2.0", "reason": "no_memory"}, st
