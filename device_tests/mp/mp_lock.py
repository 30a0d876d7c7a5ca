"""The Lock through the simulated board: keypad scan, relay, lockout, backup rotation, trusted time, log."""
import micropython

import mputil
from mputil import Sim

D = mputil.digest
T = 1767225600  # 2026-01-01, the default world epoch of Sim


def setup():
    mputil.fresh_dir()
    mputil.write_config()


def _set_time(s):
    assert s.lock.set_trusted_time(s.board.world.epoch(), "server")


def test_scan_does_not_allocate():
    s = Sim()
    kp = s.lock.keypad
    s.board.world.pressed = 4
    micropython.heap_lock()
    try:
        for _ in range(10):
            s.lock._tick()
    finally:
        micropython.heap_unlock()
    assert kp.pop() == ord("5") and kp.pop() == -1


def test_keys_not_lost_or_doubled():
    s = Sim()
    s.type("12*3456*7890*" * 3)
    keys = "".join(d["key"] for e, d in s.events if e == "key")
    assert keys == "12*3456*7890*" * 3, keys


def test_bounce_shorter_than_debounce_is_ignored():
    s = Sim()
    s.type("1", hold=10, gap=10)
    s.type("2", hold=30, gap=30)
    keys = "".join(d["key"] for e, d in s.events if e == "key")
    assert keys == "2", keys


def test_keys_scanned_while_main_loop_busy():
    s = Sim()
    _set_time(s)
    s.lock.install_codeset(1, [(4, D("4821"), T - 10, T + 1000)], None)
    w = s.board.world
    for k in "4821":  # the main loop is not called while these are typed
        w.pressed = "123456789*0#".index(k)
        w.step(80)
        w.pressed = -1
        w.step(80)
    assert not s.relay_open()
    s.advance(10)
    assert s.relay_open() and s.feedback() == ["accepted"]
    assert s.logs("opened")[0]["code_id"] == 4


def test_relay_timing_and_released_by_timer():
    s = Sim()
    s.type("5821")  # backup key
    assert s.relay_open()
    w = s.board.world
    w.step(4900)  # the timer alone (main loop stuck) releases it after relay_ms
    assert not s.relay_open()
    assert s.relay_log == [1, 0]


def test_windowed_code_needs_trusted_time_backup_does_not():
    s = Sim()
    s.lock.install_codeset(1, [(1, D("4821"), T - 10, T + 1000)], None)
    s.type("4821")
    assert not s.relay_open() and s.logs("refused")[-1]["reason"] == "no_time"
    s.type("5821")
    assert s.relay_open()
    s.advance(6000)
    _set_time(s)
    s.type("4821")
    assert s.relay_open()
    s.advance(6000)
    assert s.lock.lockout.fails == 0


def test_star_clears_hash_submits_timeout_clears():
    s = Sim()
    _set_time(s)
    s.lock.install_codeset(1, [(1, D("4821"), T - 10, T + 1000)], None)
    s.type("48*4821")
    assert s.relay_open()
    s.advance(6000)
    s.type("48")
    s.advance(10100)
    assert ("entry", {"cleared": "timeout"}) in s.events
    s.type("21")
    assert not s.relay_open()
    s.type("#")  # "21#" is too short: refused
    assert s.logs("refused")[-1]["reason"] == "length"


def test_lockout_doubles_persists_and_resets():
    s = Sim()
    _set_time(s)
    s.lock.install_codeset(1, [(1, D("4821"), T - 10, T + 10**6)], None)
    for _ in range(5):
        s.type("0000")
    assert s.feedback()[-1] == "locked_out"
    assert s.logs("lockout")[-1]["seconds"] == 30
    s.type("4821")
    assert not s.relay_open() and s.feedback()[-1] == "locked_out"
    # power cycle: a new Lock on the same flash keeps the lockout
    s2 = Sim(world=s.board.world.w, epoch_ms=s.board.world.epoch_ms + s.board.world.ms)
    _set_time(s2)
    s2.type("4821")
    assert not s2.relay_open()
    s2.advance(30000)
    s2.type("0000")
    assert s2.logs("lockout")[-1]["seconds"] == 60
    s2.advance(61000)
    for _ in range(6):
        s2.lock.lockout.remaining_ms(s2.board.world.ticks())
    s2.type("4821")
    assert s2.relay_open()
    assert s2.lock.lockout.fails == 0


def test_lockout_cap():
    from lockout import duration_for

    assert [duration_for(n) for n in range(4, 12)] == [0, 30, 60, 120, 240, 480, 900, 900]


def test_backup_rotation_due_after_24h():
    s = Sim()
    _set_time(s)
    s.type("5821")
    assert s.lock.backup.first_used == s.board.world.epoch()
    assert s.logs("backup_first_use")
    s.advance(6000)
    s.board.world.step(86400 * 1000 - 10000)
    s.advance(2000)
    assert not s.lock.backup.due
    s.board.world.step(10000)
    s.advance(2000)
    assert s.lock.backup.due and s.logs("rotation_due")
    s.type("5821")  # still opens
    assert s.relay_open()
    s.advance(6000)
    # persisted across a reboot
    s2 = Sim(world=s.board.world.w)
    assert s2.lock.backup.due
    # same digest again: nothing changes; a new digest clears it
    assert s2.lock.install_codeset(1, [], D("5821"))
    assert s2.lock.backup.due
    assert s2.lock.install_codeset(2, [], D("7305"))
    assert not s2.lock.backup.due and s2.lock.backup.first_used is None
    s2.type("5821")
    assert not s2.relay_open()
    s2.type("7305")
    assert s2.relay_open()


def test_backup_rotation_without_trusted_time():
    s = Sim()
    s.type("5821")
    assert s.lock.backup.first_used is None
    s.advance(6000)
    s.board.world.step(86400 * 1000)
    s.advance(2000)
    assert s.lock.backup.due


def test_time_backwards_refused_and_rtc():
    s = Sim(rtc=True, world={"rtc_osf": True})
    assert s.lock.trusted_now() is None  # a fresh DS3231 (oscillator-stop flag set) is not trusted
    assert s.lock.set_trusted_time(T + 1000, "ntp")
    assert not s.lock.set_trusted_time(T + 500, "server")
    assert s.logs("time_refused")
    # the RTC was written: after a reboot the lock has trusted time from it
    s2 = Sim(rtc=True, world=s.board.world.w)
    t = s2.lock.trusted_now()
    assert t is not None and abs(t - (T + 1000)) <= 2, t
    assert s2.lock.clock.source == "rtc"
    # battery out: untrusted again
    w = dict(s.board.world.w)
    w["rtc_osf"] = True
    s3 = Sim(rtc=True, world=w)
    assert s3.lock.trusted_now() is None


def test_rtc_behind_last_good_is_refused():
    s = Sim(rtc=True)
    assert s.lock.set_trusted_time(T + 5000, "server")
    w = s.board.world.w
    w["rtc_offset"] = -100000
    s2 = Sim(rtc=True, world=w)
    assert s2.lock.trusted_now() is None


def test_install_codeset_revisions():
    s = Sim()
    assert s.lock.revision == 0
    assert s.lock.install_codeset(5, [(1, D("1111"), 0, 10)], None)
    assert not s.lock.install_codeset(5, [], None)
    assert not s.lock.install_codeset(4, [], None)
    assert not s.lock.install_codeset(6, [(1, b"bad", 0, 10)], None)
    assert s.lock.revision == 5
    assert [d["revision"] for d in s.logs("codeset_refused")] == [5, 4, 6]
    s2 = Sim()
    assert s2.lock.revision == 5 and s2.lock.codes.count == 1


def test_log_seq_survives_reboot_and_ring_overflows():
    s = Sim()
    first = s.lock.last_seq
    for _ in range(3):
        s.type("#")  # nothing entered: ignored, no event
    s2 = Sim()
    assert s2.lock.last_seq == first + 1  # its own boot event
    assert s2.lock.boot_count == 2
    ev = s2.lock.log_since(0, 10)
    assert [e["kind"] for e in ev] == ["boot", "boot"] and ev[1]["boot"] == 2
    for i in range(140):
        s2.lock.install_codeset(100 + i, [], None)
    assert s2.lock.last_seq == first + 141
    got = s2.lock.log_since(0, 1000)
    assert len(got) == 128 and got[-1]["seq"] == s2.lock.last_seq and got[0]["seq"] == s2.lock.last_seq - 127
    assert s2.lock.log.dropped == 14
    assert s2.lock.log_since(s2.lock.last_seq - 3, 2)[0]["seq"] == s2.lock.last_seq - 2


def test_services_polled_and_isolated():
    s = Sim()

    class Svc:
        n = 0

        def poll(self, now):
            Svc.n += 1
            if Svc.n == 3:
                raise ValueError("boom")

    s.lock.add_service(Svc())
    s.advance(100)
    assert Svc.n > 10 and s.lock.service_errors == 1


def test_lockout_rest_after_power_cycle_with_rtc():
    s = Sim(rtc=True)
    assert s.lock.trusted_now() is not None
    for _ in range(5):
        s.type("0000")
    assert s.lock.lockout.remaining_ms(s.board.world.ticks()) > 25000
    s.advance(20000)
    w = s.board.world
    s2 = Sim(rtc=True, world=w.w, epoch_ms=w.epoch_ms + w.ms)  # power cycle 20 s into the 30 s lockout
    rest = s2.lock.lockout.remaining_ms(s2.board.world.ticks())
    assert 5000 <= rest <= 12000, rest
    s2.advance(12000)
    s2.type("5821")
    assert s2.relay_open()
