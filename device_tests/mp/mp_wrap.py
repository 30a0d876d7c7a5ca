"""Ticks wrap like on the ESP32 (period 2**30 ms, 12.4 days): the simulated board's `time` and its virtual
ticks both wrap, starting 20 s before a wrap, and a lock left running for a week (past 2**29 ms, when a kept
ticks value turns into its opposite) still keeps time, times its relay, entries and lockouts, and rotates."""
import time

import mputil
from mputil import Sim

D = mputil.digest
T = 1767225600
WEEK_MS = 7 * 86400 * 1000  # > 2**29 ms
PERIOD = 1 << 30


def setup():
    mputil.fresh_dir()
    mputil.write_config()


def _run(s, ms, step=60000):
    """Let ms pass with the main loop polling every step (the ticker runs too)."""
    w = s.board.world
    end = w.ms + ms
    while w.ms < end:
        s.lock.poll(w.ticks())
        w.step(min(step, end - w.ms))
    s.lock.poll(w.ticks())


def test_the_firmware_sees_esp32_ticks():
    assert time.ticks_diff(time.ticks_add(PERIOD - 1, 1), 0) == 0
    assert time.ticks_diff(0, PERIOD - 1) == 1
    assert time.ticks_diff(PERIOD >> 1, 0) == -(PERIOD >> 1)  # half a period on: the past, as on a board
    s = Sim()
    assert s.board.world.ticks() == PERIOD - 20000  # 20 s before the wrap
    s.advance(25000)
    assert s.board.world.ticks() < 10000  # it wrapped


def test_a_clock_kept_past_half_a_period_is_caught():
    """The harness catches the bug it is for: an anchor never rebased reads 12.4 days off after a week."""
    s = Sim()
    w = s.board.world
    anchor = w.ticks()
    _run(s, WEEK_MS)
    naive = time.ticks_diff(w.ticks(), anchor) // 1000
    assert naive < 0 and abs(naive + PERIOD // 1000 - WEEK_MS // 1000) <= 1


def test_a_week_of_running_keeps_trusted_time_and_timers():
    s = Sim()
    assert s.lock.set_trusted_time(s.board.world.epoch(), "server")
    s.lock.install_codeset(1, [(1, D("4821"), T, T + 30 * 86400)], None)
    _run(s, WEEK_MS)
    assert s.lock.trusted_now() == s.board.world.epoch()
    s.type("4821")
    assert s.relay_open() and s.logs("opened")
    s.advance(5200)
    assert not s.relay_open()
    s.type("48")
    s.advance(10100)
    assert s.events[-1] == ("entry", {"cleared": "timeout"})
    for _ in range(5):
        s.type("0000")
    assert s.feedback()[-1] == "locked_out"
    _run(s, WEEK_MS)  # another week: the lockout ended long ago, however the ticks stand
    s.type("4821")
    assert s.relay_open()


def test_backup_rotation_after_a_week_without_trusted_time():
    s = Sim()
    s.type("5821")
    s.advance(6000)
    _run(s, WEEK_MS)
    assert s.lock.backup.due and s.logs("rotation_due")
