"""The code store: hashed lookup, windows, duplicates, trusted time, persistence format."""
import mputil
from accesslog import REASONS
from codes import OPEN, CodeSet

# a refusal's lookup result is its reason's index in the access log's table
UNKNOWN, OUTSIDE, NO_TIME = (REASONS.index(r) for r in ("unknown", "outside_window", "no_time"))

D = mputil.digest
T = 1767225600


def test_lookup_window_half_open():
    cs = CodeSet.build(3, [(7, D("4821"), T, T + 100)], None)
    assert cs.lookup(D("4821"), T) == (OPEN, 7)
    assert cs.lookup(D("4821"), T + 99) == (OPEN, 7)
    assert cs.lookup(D("4821"), T + 100) == (OUTSIDE, 7)
    assert cs.lookup(D("4821"), T - 1) == (OUTSIDE, 7)
    assert cs.lookup(D("4822"), T)[0] == UNKNOWN
    assert cs.lookup(D("4821"), None) == (NO_TIME, 7)


def test_same_code_in_several_windows():
    cs = CodeSet.build(1, [(1, D("1357"), T, T + 10), (2, D("1357"), T + 20, T + 30), (3, D("2468"), T, T + 30)], None)
    assert cs.lookup(D("1357"), T + 5) == (OPEN, 1)
    assert cs.lookup(D("1357"), T + 25) == (OPEN, 2)
    assert cs.lookup(D("1357"), T + 15)[0] == OUTSIDE
    assert cs.lookup(D("2468"), T + 15) == (OPEN, 3)


def test_many_codes_all_found():
    codes = ((i + 1, D("%04d" % i), T, T + 10) for i in range(300))  # a generator: built incrementally
    cs = CodeSet.build(1, codes, D("9999"))
    for i in range(300):
        assert cs.lookup(D("%04d" % i), T) == (OPEN, i + 1)
    assert cs.is_backup(D("9999")) and not cs.is_backup(D("0001"))


def test_roundtrip_and_malformed():
    cs = CodeSet.build(9, [(5, D("1111"), 10, 20)], D("5821"))
    head, recs = cs.parts()
    back = CodeSet.parse(memoryview(bytes(head) + bytes(recs)))
    assert back.revision == 9 and back.count == 1 and back.backup == D("5821")
    assert back.lookup(D("1111"), 15) == (OPEN, 5)
    assert CodeSet.parse(memoryview(bytes(head) + bytes(recs)[:-1])) is None
    for bad in ([(0, D("1"), 1, 2)], [(1, b"short", 1, 2)], [(1, D("1"), 5, 5)]):
        try:
            CodeSet.build(1, bad, None)
            assert False, bad
        except ValueError:
            pass


def test_no_code_in_clear_on_flash():
    mputil.fresh_dir()
    mputil.write_config()
    s = mputil.Sim()
    s.lock.install_codeset(1, [(1, D("4821"), T, T + 10)], D("7305"))
    import os

    for name in os.listdir("."):
        if name == "config.json":
            continue
        with open(name, "rb") as f:
            data = f.read()
        for code in (b"4821", b"7305", b"5821"):
            assert code not in data, (name, code)
