"""The keypad gives a guesser nothing: an unknown code, a real code outside its window and a real code without
trusted time are refused alike (same feedback, same flash work) and all count towards the lockout."""
import store

import mputil
from mputil import Sim

D = mputil.digest
T = 1767225600  # the default world epoch of Sim


def setup():
    mputil.fresh_dir()
    mputil.write_config()


def _refusal(s, code):
    """(feedback kinds, files saved, bytes saved) of one entry."""
    f0 = len(s.feedback())
    saved = []
    save = store.save
    store.save = lambda name, *parts: (saved.append((name, sum(len(p) for p in parts))), save(name, *parts))
    try:
        s.type(code)
        s.advance(1000)
    finally:
        store.save = save
    return s.feedback()[f0:], [n for n, _ in saved], sum(b for _, b in saved)


def test_code_valid_tomorrow_counts_towards_lockout():
    s = Sim()
    assert s.lock.set_trusted_time(T, "server")
    s.lock.install_codeset(1, [(1, D("4821"), T + 86400, T + 2 * 86400)], None)
    for _ in range(4):
        s.type("0000")
    assert s.lock.lockout.fails == 4
    s.type("4821")  # real, but valid from tomorrow
    assert s.logs("refused")[-1]["reason"] == "outside_window"
    assert s.lock.lockout.fails == 5 and s.feedback()[-1] == "locked_out"
    assert s.logs("lockout")[-1]["seconds"] == 30
    s.type("0000")
    assert not s.relay_open() and s.feedback()[-1] == "locked_out"


def test_real_code_without_trusted_time_counts_towards_lockout():
    s = Sim()
    s.lock.install_codeset(1, [(1, D("4821"), T - 10, T + 86400)], None)
    for _ in range(5):
        s.type("4821")
    assert [d["reason"] for d in s.logs("refused")] == ["no_time"] * 5
    assert s.lock.lockout.fails == 5 and s.feedback()[-1] == "locked_out"


def test_refusals_look_alike():
    s = Sim()
    assert s.lock.set_trusted_time(T, "server")
    s.lock.install_codeset(1, [(1, D("4821"), T + 86400, T + 2 * 86400), (2, D("7305"), T - 10, T + 86400)], None)
    unknown = _refusal(s, "0000")
    outside = _refusal(s, "4821")
    s.type("7305")  # a good code resets the count between the samples
    s.advance(6000)
    again = _refusal(s, "1111")
    assert unknown == outside == again, (unknown, outside, again)
    assert unknown[0] == ["refused"]
    s2 = Sim(world={"rtc": False})  # a reboot without trusted time: a real code refused for it looks the same
    assert s2.lock.trusted_now() is None
    assert _refusal(s2, "7305") == _refusal(s2, "0000")


def test_guessing_budget_under_100_a_day():
    from lockout import duration_for

    t = 0
    n = 0
    while t < 86400:
        n += 1
        t += duration_for(n)
    assert n <= 100, n
