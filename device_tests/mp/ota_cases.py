"""Firmware updates on the unix port under the heap cap: the Ed25519 verifier against PyNaCl, the updater's
path from announcement to staged slot, its refusals, power cuts at random file operations, the boot
selector's trial and rollback, the self-check. The fixture (keys, signed releases, archives) is made by
device_tests/test_ota.py with the cloud's own release code and PyNaCl."""
import json
import os
import random
from binascii import b2a_base64, unhexlify

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


def ann(rel):
    """The cloud's announcement of rel (cloud/firmware/rollout.py)."""
    return {"v": 1, "t": "fw", "ver": rel["ver"], "target": rel["target"], "size": rel["size"], "sha": rel["sha"],
            "sig": rel["sig"], "flags": rel["flags"]}


def normal_boot(rel):
    """A normal boot is announced rel: (the reports it sent, whether it restarts to have it fetched)."""
    sent = []
    board = FakeBoard()
    shim = ota.Ota(FakeLock(), board, {"fw_pubkey": PUB})
    shim.send = lambda obj: sent.append(obj) or True
    assert shim.u is None  # a normal boot never loads the updater
    shim._on_msg(ota.Msg(ann(rel)), 0)
    shim.poll(0)
    return sent, board.reboots == ["update"]


def fetch(rel, passes=4000):
    """rel announced to a normal boot and accepted by the selector, then the fetching boot, run until its
    restart is due."""
    assert normal_boot(rel)[1]
    _boot_select()
    assert store.exists("ota.bin") and not bootstate.load()["fetch"]
    r = Rig(rel)
    r.run(passes)
    return r


class Rig:
    """A fetching boot: ota.update_boot(), then the updater ota.py loads, wired to a fake link that answers its
    chunk requests from a release's archive."""

    def __init__(self, rel=None):
        self.lock = FakeLock()
        self.board = FakeBoard()
        self.sent = []
        self.status = []
        self.small = ota.update_boot()
        self.u = updater.Updater(self.lock, self.board, {"fw_pubkey": PUB})
        self.u.send = self._send
        self.rel = rel
        self.u.on_link({"state": "connected"})

    def _send(self, obj):
        self.sent.append(obj)
        if obj["t"] == "fwstatus":
            self.status.append(obj)
        return True

    def run(self, passes=4000):
        """Poll, answering every chunk request, until the updater's restart is due or it goes quiet."""
        for _ in range(passes):
            n = len(self.sent)
            self.u.poll(0)
            for m in self.sent[n:]:
                if m["t"] == "fwget":
                    self.serve(m)
            del self.sent[n:]  # keep only the reports (the test's own heap is capped too)
            if self.u.due:
                return

    def serve(self, m):
        with open(self.rel["archive"], "rb") as f:
            f.seek(m["off"])
            data = f.read(m["len"])
        self.u.on_message({"t": "fwchunk", "ver": m["ver"], "off": m["off"], "d": b2a_base64(data).decode()})

    def reports(self, state=None):
        return [m for m in self.status if state is None or m["state"] == state]


class TrialRig(Rig):
    """The new version's first boot: the Trial ota.py loads then, with the same fake link."""

    def __init__(self):
        self.lock = FakeLock()
        self.board = FakeBoard()
        self.sent = []
        self.status = []
        self.u = trial.Trial(self.lock, self.board, {"fw_pubkey": PUB})
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


CHUNK = 256  # updater._CHUNK (a const: no name on the board)
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
    rel = FIX["releases"]["good"]
    assert normal_boot(rel)[1]  # recorded for the selector, then a restart
    assert bootstate.load()["fetch"]["ann"]["ver"] == rel["ver"] and not store.exists("ota.bin")
    _boot_select()  # the selector accepts it in a boot of its own, and restarts into the fetching boot
    assert len(RESTARTS) == 1 and store.exists("ota.bin") and not bootstate.load()["fetch"], RESTARTS
    r = Rig(rel)
    assert r.small  # the fetching boot's link takes the small receiving buffer
    r.run()
    assert r.u.due and not r.board.reboots, r.status  # the restart, once the grace and the door allow
    st = bootstate.load()
    assert st["pending"]["ver"] == rel["ver"] and st["slot"] is None  # nothing switched yet
    assert r.reports("downloaded") and not r.reports("refused") and not store.exists("ota.bin")
    d, trial = _boot_select()
    st = bootstate.load()
    assert d == "app/a" and trial and st["slot"] == "a" and st["ver"] == rel["ver"] and st["good"] is None
    assert st["pending"] is None and _slot_ok("a", rel["archive"])
    # installed and checked, then one restart: the trial starts on a heap without the install's names
    assert RESTARTS == ["checked"] and st["stage"] == "booting" and st["tries"] == 1, (RESTARTS, st)
    assert ota.update_boot()  # the trial boot's link takes the small buffer too


def test_the_restart_waits_for_the_grace_and_an_idle_door():
    fresh()
    r = fetch(FIX["releases"]["good"])
    r.lock.busy = lambda: True  # a code is opening the door
    import time

    time.sleep_ms(2100)
    r.u.poll(0)
    assert not r.board.reboots
    r.lock.busy = lambda: False
    r.u.poll(0)
    assert r.board.reboots == ["update"]


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


def _not_again(rel):
    """The normal boot does not take a version refused or rolled back here: it says so, and stays."""
    sent, restarts = normal_boot(rel)
    assert not restarts and not bootstate.load()["fetch"]
    assert [(m["state"], m["reason"]) for m in sent] == [("refused", "failed_before")], sent


def _refused_at_install(rel_name, want):
    fresh()
    rel = FIX["releases"][rel_name]
    fetch(rel)
    d, trial = _boot_select()
    st = bootstate.load()
    assert d is None and not trial and st["slot"] is None, st  # the running version is untouched
    assert len(RESTARTS) == 1, RESTARTS  # and boots again after a restart, on a heap the check never touched
    assert st["refused"] == {"ver": rel["ver"], "reason": want}, st
    assert not os.listdir("app") if "app" in os.listdir() else True
    sent = _told()
    assert [(m["state"], m["ver"], m["reason"]) for m in sent] == [("refused", rel["ver"], want)] * 2, sent
    _not_again(rel)


def _refused_by_rules(rel, want):
    """Refused by the selector's rules: nothing is fetched, the refusal is told at every connection."""
    fresh()
    assert normal_boot(rel)[1]
    _boot_select()
    st = bootstate.load()
    assert not store.exists("ota.bin") and st["refused"] == {"ver": rel["ver"], "reason": want}, st
    assert not ota.update_boot()  # the next boot is a normal one
    sent = _told()
    assert [(m["state"], m["reason"]) for m in sent] == [("refused", want)] * 2, sent
    _not_again(rel)


def test_bad_signature_refused():
    _refused_at_install("bad_sig", "bad_signature")


def test_wrong_hash_refused_by_the_fetching_boot():
    fresh()
    rel = FIX["releases"]["bad_hash"]
    r = fetch(rel)
    assert [m["reason"] for m in r.reports("refused")] == ["bad_hash"], r.status
    st = bootstate.load()
    assert st["refused"] == {"ver": rel["ver"], "reason": "bad_hash"} and st["pending"] is None, st
    assert r.u.due and not store.exists("ota.bin") and not store.exists("fw.bin")
    assert not ota.update_boot()  # back to a normal boot, which does not fetch it again
    _not_again(rel)


def test_downgrade_refused():
    _refused_by_rules(FIX["releases"]["old"], "downgrade")


def test_wrong_target_refused():
    _refused_by_rules(FIX["releases"]["esp32"], "wrong_target")


def test_oversize_refused():
    import fwrules

    rel = dict(FIX["releases"]["good"])
    rel["size"] = fwrules.MAX_SIZE + 1
    _refused_by_rules(rel, "oversize")


def test_a_normal_boot_never_loads_the_updater():
    fresh()
    assert normal_boot({"ver": "0.2.0", "target": "host", "size": 1, "sha": "00", "sig": "", "flags": 0})[1]
    _boot_select()  # malformed (sha, sig): the selector drops it, nothing is refused or fetched
    st = bootstate.load()
    assert not store.exists("ota.bin") and st["refused"] is None and st["fetch"] is None, st
    sent, restarts = normal_boot(FIX["releases"]["good"])  # the next announcement is taken
    assert restarts and not sent


def test_a_fetching_boot_without_progress_is_dropped_after_three():
    """A fetching boot that keeps crashing (no memory for its work, a watchdog reset) never loops."""
    fresh()
    rel = FIX["releases"]["good"]
    assert normal_boot(rel)[1]
    _boot_select()
    r = Rig(rel)  # boot 1: one chunk, then a crash
    r.u.poll(0)
    r.serve([m for m in r.sent if m["t"] == "fwget"][0])
    assert store.load_dict("ota.bin")["boots"] == 0  # progress resets the count
    assert ota.update_boot() and ota.update_boot() and ota.update_boot()  # three boots without a chunk
    assert not ota.update_boot()  # the fourth is a normal one
    st = bootstate.load()
    assert st["refused"] == {"ver": rel["ver"], "reason": "no_progress"}, st
    assert not store.exists("ota.bin") and not store.exists("fw.bin")
    _not_again(rel)


def test_a_stalled_fetch_or_another_release_ends_the_fetching_boot():
    fresh()
    rel = FIX["releases"]["good"]
    assert normal_boot(rel)[1]
    _boot_select()
    r = Rig(rel)
    r.u.on_message({"t": "fw", "ver": rel["ver"]})  # the same release again: nothing changes
    assert not r.u.due and store.exists("ota.bin")
    r.u.on_message({"t": "fw", "ver": "0.2.1"})  # the cloud moved on: the normal boot will take it
    assert r.u.due and not store.exists("ota.bin") and r.reports("dropped")
    assert bootstate.load()["refused"] is None
    fresh()
    assert normal_boot(rel)[1]
    _boot_select()
    r = Rig(rel)
    from time import ticks_add, ticks_ms

    r.u.last = ticks_add(ticks_ms(), -600001)  # connected ten minutes without a chunk
    r.u.poll(0)
    assert r.u.due and not store.exists("ota.bin") and r.reports("stalled")
    assert bootstate.load()["refused"] is None  # not the lock's refusal: a new rollout may announce it again


_MODS = (updater, fwbundle, store, bootsel, bootinstall)


def _install(cut):
    powercut.install(cut, _MODS)


def _uninstall():
    powercut.uninstall(_MODS)


def _power_up(rel):
    """One boot: the selector, then the application's update work (a normal boot is announced rel, a
    fetching boot fetches it)."""
    _boot_select()
    if bootstate.load()["trial"]:
        return
    if store.exists("ota.bin"):
        Rig(rel).run()  # its ota.update_boot() may still drop the job: then the updater restarts at once
    else:
        normal_boot(rel)


def test_power_cut_at_random_points_leaves_a_bootable_lock():
    """Cuts while recording the announcement, accepting it, fetching, installing, switching: the boot state always
    names the factory application or a complete slot, and with the power back the update completes."""
    rel = FIX["releases"]["good"]
    random.seed(7)
    total = 0
    for trial in range(int(os.getenv("OTA_CUTS") or "25")):
        fresh()
        n = random.getrandbits(16) % 200 + 1
        for _ in range(20):
            cut = Cutter(n)
            _install(cut)
            try:
                _power_up(rel)
            except PowerCut:
                total += 1
            finally:
                _uninstall()
            st = bootstate.load()
            assert st["slot"] is None or _slot_ok(st["slot"], rel["archive"]), (trial, n, st)
            if st["slot"] == "a":
                break
            if cut.ops >= n:
                n = 10**9  # power back: no more cuts, it must resume and finish
            else:
                n -= cut.ops  # not reached in this boot: the cut comes in a later one
        st = bootstate.load()
        assert st["slot"] == "a" and st["ver"] == rel["ver"], (trial, n, st)
    assert total > 0


def test_resume_asks_from_where_it_stopped():
    fresh()
    rel = FIX["releases"]["good"]
    assert normal_boot(rel)[1]
    _boot_select()
    r = Rig(rel)
    for _ in range(100):  # three chunks
        n = len(r.sent)
        r.u.poll(0)
        for m in r.sent[n:]:
            if m["t"] == "fwget" and m["off"] < 3 * CHUNK:
                r.serve(m)
    r2 = Rig(rel)  # a reboot: a new fetching boot reading ota.bin
    r2.u.poll(0)
    gets = [m for m in r2.sent if m["t"] == "fwget"]
    assert gets and gets[0]["off"] == 3 * CHUNK, gets
    assert r2.reports("downloading")[0]["off"] == 3 * CHUNK


def test_selector_trial_then_rollback_when_not_confirmed():
    fresh()
    fetch(FIX["releases"]["good"])
    d, trial = _boot_select()
    assert d == "app/a" and trial
    # it crashed before the updater ran (stage still "booting"): the next boot rolls back
    d, trial = _boot_select()
    st = bootstate.load()
    assert d is None and not trial and st["rollbacks"] == 1 and st["last"]["reason"] == "crash_at_boot", st
    assert RESTARTS == ["rolled_back"]  # the last good version boots after a restart


def test_trial_confirms_after_self_check_and_signed_answer():
    fresh()
    fetch(FIX["releases"]["good"])
    _boot_select()
    t = TrialRig()
    assert bootstate.load()["stage"] == "running" and t.reports("trial")
    for _ in range(200):
        t.u.poll(0)
    assert bootstate.load()["trial"] and t.u.reboot_due is None  # self-check passed, but no signed answer yet
    t.u.on_link({"time": 1, "ok": True})
    t.u.poll(0)
    assert t.reports("confirmed") and t.u.reboot_due == "update" and bootstate.load()["stage"] == "confirmed"
    # the restart: the selector makes it the last good version, then restarts into a normal boot
    d, trial = _boot_select()
    st = bootstate.load()
    assert d == "app/a" and not trial and not st["trial"] and st["good"] == "a" and RESTARTS == ["good"], st
    assert not store.exists("fw.bin") and not ota.update_boot()  # a normal boot: the full receiving buffer
    d, trial = _boot_select()  # and every boot after it keeps the new version
    assert d == "app/a" and not trial and RESTARTS == []


def test_failed_self_check_rolls_back():
    """The selector checks the new version's files against the archive before its one boot on trial."""
    fresh()
    fetch(FIX["releases"]["good"])
    st = bootstate.load()
    bootinstall._install(bootstate, st)  # installed, then the flash spoils a file before the trial's boot
    bootstate.save(st)
    with open("app/a/lock.mpy", "r+b") as f:
        f.seek(10)
        f.write(b"\x00\x01\x02")
    d, trial = _boot_select()
    st = bootstate.load()
    assert d is None and not trial and st["slot"] is None and st["last"]["reason"] == "self_check:bad_file_hash", st
    assert RESTARTS == ["rolled_back"]
    sent = _told()  # the last good version tells it at every connection
    assert [(m["state"], m["reason"]) for m in sent] == [("rolled_back", "self_check:bad_file_hash")] * 2, sent


def test_no_signed_answer_in_time_rolls_back():
    fresh()
    rel = FIX["releases"]["good"]
    fetch(rel)
    _boot_select()
    t = TrialRig()
    t.u.confirm_ms = 0
    t.u.poll(0)
    assert t.u.reboot_due == "rollback" and bootstate.load()["stage"] == "no_ack"
    d, trial = _boot_select()  # the restart: the selector rolls it back
    st = bootstate.load()
    assert d is None and not trial and st["slot"] is None and st["last"]["reason"] == "no_ack", st
    assert RESTARTS == ["rolled_back"]
    # the good version reports the rollback at every connection
    sent = _told()
    assert [(m["state"], m["reason"], m["rollbacks"]) for m in sent] == [("rolled_back", "no_ack", 1)] * 2, sent
    _not_again(rel)  # and does not take the failed version again


def test_a_signature_check_cut_short_is_a_refusal_not_a_pass():
    fresh()
    fetch(FIX["releases"]["good"])
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
