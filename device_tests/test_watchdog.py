"""The watchdog on the simulated board (main.py feeds it, sim/board/simwdt.py is the board's): a main loop that
stops feeding resets the board after 8 s of the world's time; the relay is released, the lock is ready again
and says why it started (ready, status, the boot record of its access log); a crash and a power cut too."""
import json

from sim.driver import SimLock, init

BACKUP = "5821"


def _lock(tmp_path, **cfg):
    d = tmp_path / "lock"
    r = init(d, "--backup-key", BACKUP, "--epoch", "1767225600")
    assert r.returncode == 0, r.stderr
    p = d / "flash" / "config.json"
    p.write_text(json.dumps(dict(json.loads(p.read_text()), **cfg)))
    return d


def _boots(s):
    log = [e for e in s.send("!log 0 100") if e["event"] == "log_since"][0]["events"]
    return [e.get("reason") for e in log if e["kind"] == "boot"]


def test_a_hung_main_loop_resets_the_board(tmp_path):
    with SimLock(_lock(tmp_path, relay_ms=30000)) as s:
        assert [e["reset_cause"] for e in s.boot if e["event"] == "ready"] == ["power_on"]
        assert s.kinds(s.send(BACKUP), "relay", "state") == ["open"]
        ev = s.send("!hang 20")
        names = [e["event"] for e in ev]
        assert "hang" not in names  # the watchdog bit first
        i = names.index("reset")
        assert ev[i] == {"event": "reset", "reason": "watchdog", "unfed_ms": 8000}
        assert s.kinds(ev[:i], "relay", "state") == ["closed"]  # released by the reset, 22 s early
        assert [e["reset_cause"] for e in ev[i:] if e["event"] == "ready"] == ["watchdog"]
        st = s.status()
        assert st["reset_cause"] == "watchdog" and st["boot_count"] == 2
        assert _boots(s) == ["power_on", "watchdog"]
        assert s.kinds(s.send(BACKUP), "relay", "state") == ["open"]  # and the lock works again


def test_shorter_hangs_and_fast_forwards_do_not_reset(tmp_path):
    with SimLock(_lock(tmp_path)) as s:
        ev = s.send("!hang 7.9")
        assert "reset" not in [e["event"] for e in ev] and "hang" in [e["event"] for e in ev]
        ev = s.send("!advance 86400")  # a day of a main loop spinning idle: fed all along
        assert "reset" not in [e["event"] for e in ev]
        assert s.status()["boot_count"] == 1


def test_a_crash_and_a_power_cut_are_told_apart(tmp_path):
    with SimLock(_lock(tmp_path)) as s:
        ev = s.send("!crash")
        assert [e["reset_cause"] for e in ev if e["event"] == "ready"] == ["crash"]
        ev = s.send("!power-cycle")
        assert [e["reset_cause"] for e in ev if e["event"] == "ready"] == ["power_on"]
        assert _boots(s) == ["power_on", "crash", "power_on"]
