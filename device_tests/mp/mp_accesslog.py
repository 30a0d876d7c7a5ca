"""The access log on flash (accesslog.py, read back by restore.py): one 16-byte append per event, power cuts
at every file operation and at random bytes of an append never lose an older record, seqs stay monotonic
across reboots, and the ring file of earlier firmware is migrated."""
import os
import random

import accesslog as al
import mputil
import powercut
import restore
import store
from powercut import Cutter, PowerCut

# record kinds by name (the firmware's modules keep them as private constants)
BOOT, OPENED, REFUSED, CRASH = (al.KINDS.index(k) for k in ("boot", "opened", "refused", "crash"))


def _boot():
    log = al.AccessLog()
    restore.log(log)
    return log


def _seqs(log):
    return [r[0] for r in log.since(0, 1000)]


def test_an_event_is_one_small_append():
    mputil.fresh_dir()
    log = _boot()
    w0 = store.writes
    for i in range(30):
        log.append(1767225600 + i, OPENED, i)
    assert store.writes - w0 == 30 and os.stat("log0.bin")[6] == 30 * al.REC
    log = _boot()
    got = log.since(0, 100)
    assert [r[3] for r in got] == list(range(30)) and got[0][1] == 1767225600 and got[0][2] == OPENED


def test_a_power_cut_at_any_point_of_an_append_keeps_every_older_record():
    random.seed(11)
    for before in (5, al.CAPACITY - 1, al.CAPACITY, 2 * al.CAPACITY + 3):  # inside a segment, at a switch
        n = 1
        while True:
            mputil.fresh_dir()
            log = _boot()
            for i in range(before):
                log.append(None, BOOT, i)
            held = _seqs(log)
            cut = Cutter(n)
            powercut.install(cut, (store,))
            done = False
            try:
                log.append(None, CRASH, 0)
                done = True
            except PowerCut:
                pass
            finally:
                powercut.uninstall((store,))
            log = _boot()
            got = _seqs(log)
            new = (held + [before + 1])[-al.CAPACITY:]  # the newest CAPACITY are held
            assert (got == new) if done else (got in (held, new)), (before, n, got[:3], got[-3:])
            nxt = log.append(None, OPENED, 7)  # appends stay aligned after a cut
            assert nxt > max(got) and _seqs(_boot())[-1] == nxt, (before, n)
            if done:
                break
            n += 1


def test_the_newest_capacity_records_are_held_and_seqs_survive_reboots():
    mputil.fresh_dir()
    log = _boot()
    for i in range(3 * al.CAPACITY + 5):
        log.append(None, REFUSED, 1)
        if i % 50 == 0:
            log = _boot()
    log = _boot()
    got = _seqs(log)
    assert len(got) == al.CAPACITY and got[-1] == 3 * al.CAPACITY + 5 and log.dropped == 2 * al.CAPACITY + 5
    assert sorted(os.listdir(".")) == ["log0.bin", "log1.bin"]
    assert all(os.stat(f)[6] <= al.CAPACITY * al.REC for f in ("log0.bin", "log1.bin"))


def test_the_ring_file_of_earlier_firmware_is_migrated():
    mputil.fresh_dir()
    from be32 import put32

    cap = 128
    ring = bytearray(cap * 16)
    nxt = 140  # 139 records written, the newest 128 held
    for seq in range(nxt - cap, nxt):
        o = (seq % cap) * 16
        put32(ring, o, seq)
        put32(ring, o + 4, 1767225600 + seq)
        ring[o + 8], ring[o + 9] = 0, OPENED
        put32(ring, o + 12, seq * 10)
    head = bytearray(10)
    put32(head, 0, nxt)
    head[4], head[5] = 0, cap
    store.save("log.bin", head, ring)
    log = _boot()
    got = log.since(0, 1000)
    assert [r[0] for r in got] == list(range(nxt - cap, nxt)) and got[-1][3] == (nxt - 1) * 10
    assert not store.exists("log.bin") and log.append(None, BOOT, 1) == nxt
