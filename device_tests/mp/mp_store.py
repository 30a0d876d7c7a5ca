"""Atomic persistence under power cuts injected at every file operation and at random byte offsets."""
import random

import mputil
import powercut
import store
from powercut import Cutter, PowerCut


def _install(cut):
    powercut.install(cut, (store,))


def _uninstall():
    powercut.uninstall((store,))


def test_every_cut_point_leaves_old_or_new():
    random.seed(7)
    for rounds in range(3):
        n = 1
        while True:
            mputil.fresh_dir()
            store.save("f", b"old" * 50)
            if rounds:
                store.save("f", b"older" * 7)  # a .bak exists too
                store.save("f", b"old" * 50)
            cut = Cutter(n)
            _install(cut)
            completed = False
            try:
                store.save("f", b"new" * 60, b"!")
                completed = True
            except PowerCut:
                pass
            finally:
                _uninstall()
            got = store.load("f")
            assert got is not None, n
            got = bytes(got)
            assert got in (b"old" * 50, b"new" * 60 + b"!"), (n, got[:10])
            if completed:
                assert got == b"new" * 60 + b"!"
                break
            # after recovery, the next save and load work
            store.save("f", b"next")
            assert bytes(store.load("f")) == b"next"
            n += 1
        assert n > 5


def test_corrupt_file_falls_back_to_last_good():
    mputil.fresh_dir()
    store.save("f", b"one")
    store.save("f", b"two")
    with open("f", "r+b") as f:
        f.seek(8)
        f.write(b"X")
    assert bytes(store.load("f")) == b"one"
    assert store.corrupt_seen == 1
    with open("f", "wb") as f:
        f.write(b"")
    assert bytes(store.load("f")) == b"one"


def test_missing_everything_is_none():
    mputil.fresh_dir()
    assert store.load("nothing") is None


def test_lock_state_survives_cuts_during_install():
    """Power cut at each operation of install_codeset: after reboot the lock holds the old or new set."""
    D = mputil.digest
    n = 1
    while n < 40:
        mputil.fresh_dir()
        mputil.write_config()
        s = mputil.Sim()
        assert s.lock.install_codeset(1, [(1, D("1111"), 0, 2**31)], None)
        cut = Cutter(n)
        _install(cut)
        done = False
        try:
            done = s.lock.install_codeset(2, [(2, D("2222"), 0, 2**31), (3, D("3333"), 0, 2**31)], D("7777"))
        except PowerCut:
            pass
        finally:
            _uninstall()
        s2 = mputil.Sim()  # reboot on the same flash
        rev = s2.lock.revision
        assert rev in (1, 2), rev
        if rev == 1:
            assert s2.lock.codes.count == 1 and s2.lock.codes.is_backup(D("5821"))
        else:
            assert s2.lock.codes.count == 2 and s2.lock.codes.is_backup(D("7777"))
        assert s2.lock.boot_count >= 2
        if done:
            break
        n += 1
    assert n > 3
