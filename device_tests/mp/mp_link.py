"""The link's policy (device/link.py) against a fake session: hello and nonce, trusted time, installing a state,
log upload, refusals (a flood costs one access-log record per reason per 10 minutes), rotation retries."""
import time

import mputil
import store
from fakesession import FakeSession
from link import Link
from linkmsg import Down, LogAck, Refused, State, Time, Up
from mputil import Sim

D = mputil.digest
T = 1767225600


def setup():
    mputil.fresh_dir()
    mputil.write_config()


def _linked(connected=True):
    s = Sim()
    fs = FakeSession()
    fs.connected = connected
    ln = Link(s.lock, fs)
    s.lock.add_service(ln)
    return s, fs, ln


def _up(s, fs, will=7):
    fs.deliver(Up(will))
    s.advance(10)
    return fs.of_type("hello")[-1]


def test_hello_carries_nonce_will_and_health():
    s, fs, ln = _linked()
    h = _up(s, fs)
    assert fs.started >= 1
    assert h["will"] == 7 and h["rev"] == 0 and h["time"] is None and len(h["nonce"]) == 16
    hl = h["health"]
    assert hl["rssi"] == -61 and hl["heap_free"] > 0 and hl["heap_block"] > 1024, hl
    assert hl["uptime"] >= 0
    assert ("link", {"state": "connected"}) in s.events


def test_time_only_with_this_sessions_nonce():
    s, fs, ln = _linked()
    h = _up(s, fs)
    fs.deliver(Time(T, "not-the-nonce"))
    s.advance(10)
    assert s.lock.trusted_now() is None and fs.counts == {"stale_time": 1}
    fs.deliver(Time(T, h["nonce"]))
    s.advance(10)
    assert s.lock.trusted_now() is not None
    fs.deliver(Time(T + 5, h["nonce"]))  # the nonce is used up
    s.advance(10)
    assert fs.counts["stale_time"] == 2


def test_down_forgets_the_nonce():
    s, fs, ln = _linked()
    h = _up(s, fs)
    fs.deliver(Down("OSError('connection lost')"), Time(T, h["nonce"]))
    s.advance(10)
    assert s.lock.trusted_now() is None
    assert ("link", {"state": "offline", "reason": "OSError('connection lost')"}) in s.events


def test_state_installs_acks_and_releases_its_buffer():
    s, fs, ln = _linked()
    _up(s, fs)
    assert s.lock.set_trusted_time(s.board.world.epoch(), "server")
    st = State(5, [(1, D("4821"), T - 10, T + 3600)], None)
    fs.deliver(st)
    s.advance(10)
    assert s.lock.revision == 5 and fs.of_type("ack") == [{"v": 1, "t": "ack", "rev": 5}]
    assert fs.released == 1
    s.type("4821#")
    assert s.relay_open()
    fs.deliver(State(5, [], None))  # the same revision again: acknowledged, not installed
    fs.deliver(State(4, [], None))  # an older one: refused and counted
    s.advance(10)
    assert len(fs.of_type("ack")) == 2 and fs.counts == {"stale_revision": 1}
    assert fs.released == 3


def test_log_upload_and_ack():
    s, fs, ln = _linked()
    _up(s, fs)
    first = fs.of_type("log")[-1]["ev"]  # the boot record went with the hello
    assert first[0]["kind"] == "boot"
    s.type("9999#")
    s.advance(10)
    assert len(fs.of_type("log")) == 1  # the next batch waits for the ack of the first
    fs.deliver(LogAck(first[-1]["seq"]))
    s.advance(10)
    logs = fs.of_type("log")
    assert len(logs) == 2 and logs[-1]["ev"][-1]["seq"] == s.lock.last_seq, logs
    fs.deliver(LogAck(s.lock.last_seq))
    s.advance(12000)
    assert len(fs.of_type("log")) == 2  # acknowledged: not sent again


def test_a_flood_of_refusals_costs_one_record_per_reason_per_10_minutes():
    s, fs, ln = _linked()
    _up(s, fs)
    writes = []
    save = store.save
    append = store.append
    store.save = lambda name, *parts: (writes.append(name), save(name, *parts))
    store.append = lambda name, *a: (writes.append(name), append(name, *a))
    seq0 = s.lock.last_seq
    t0 = time.ticks_ms()
    try:
        for i in range(1000):
            fs.deliver(Refused("bad_signature" if i % 2 else "malformed"))
            s.lock.poll(s.board.world.ticks())
            s.events.clear()  # the rig's own record of 1000 link events would be 2 KB in one piece at 128k
        ms = time.ticks_diff(time.ticks_ms(), t0)
        evs = s.lock.log_since(seq0, 50)
        assert [e["kind"] for e in evs] == ["codeset_refused", "codeset_refused"], evs
        assert writes == ["log0.bin", "log0.bin"], writes
        s.advance(601000, step=1000)
        fs.deliver(Refused("malformed"))
        s.advance(10)
        assert len(s.lock.log_since(seq0, 50)) == 3
    finally:
        store.save = save
        store.append = append
    print("flood: 1000 refusals applied in", ms, "ms,", len(writes), "flash writes")


def test_rotation_retries_are_jittered_and_back_off():
    s, fs, ln = _linked()
    _up(s, fs)
    s.lock.backup.due = True
    s.advance(10)
    assert len(fs.of_type("rotate")) == 1  # right away
    gaps = []
    last = s.board.world.ms
    while len(fs.of_type("rotate")) < 5:
        n = len(fs.of_type("rotate"))
        s.advance(500, step=500)
        if len(fs.of_type("rotate")) > n:
            gaps.append(s.board.world.ms - last)
            last = s.board.world.ms
    # ceilings 30 s, 60 s, 120 s, 240 s: every gap at least a second and under its ceiling
    for g, cap in zip(gaps, (30000, 60000, 120000, 240000)):
        assert 1000 <= g <= cap + 500, gaps


def test_offline_policy_sends_nothing():
    s, fs, ln = _linked(connected=False)
    s.lock.backup.due = True
    s.type("9999#")
    s.advance(100)
    assert fs.sent == []


def test_an_install_out_of_memory_is_tried_again_then_refused_once():
    s, fs, ln = _linked()
    _up(s, fs)
    real = s.lock.install_codeset
    calls = []

    def starved(*a):
        calls.append(1)
        if len(calls) <= 2:
            raise MemoryError("allocating 1024 bytes")
        return real(*a)
    s.lock.install_codeset = starved
    st = State(9, [(1, D("4821"), T - 10, T + 3600)], None)
    fs.deliver(st)
    t0 = time.ticks_ms()
    while s.lock.revision != 9 and time.ticks_diff(time.ticks_ms(), t0) < 3000:
        s.advance(10)
        time.sleep_ms(20)
    assert s.lock.revision == 9 and len(calls) == 3 and fs.released == 1
    s.lock.install_codeset = lambda *a: (_ for _ in ()).throw(MemoryError())
    st2 = State(10, [], None)
    fs.deliver(st2)
    t0 = time.ticks_ms()
    while fs.released < 2 and time.ticks_diff(time.ticks_ms(), t0) < 5000:
        s.advance(10)
        time.sleep_ms(20)
    assert fs.released == 2 and fs.counts.get("no_memory") == 1
    assert [e["kind"] for e in s.lock.log_since(0, 50)].count("codeset_refused") == 1
