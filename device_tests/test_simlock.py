"""tools/simlock end to end: the compiled firmware on the unix port (heap cap 128k) on the simulated board,
driven through its stdin/stdout contract."""
import hashlib
import hmac
import json
import random
import threading

import pytest

from sim.driver import SimLock, init

BACKUP = "5821"
T0 = 1767225600


@pytest.fixture
def lockdir(tmp_path):
    d = tmp_path / "lock"
    r = init(d, "--backup-key", BACKUP, "--epoch", str(T0))
    assert r.returncode == 0, r.stderr
    return d


def test_init_prints_lock_id_and_rejects_bad_keys(tmp_path):
    r = init(tmp_path / "a", "--backup-key", "1234")
    assert r.returncode == 0
    lid = r.stdout.strip()
    assert len(lid) == 12 and all(c in "0123456789abcdef" for c in lid)
    cfg = json.loads((tmp_path / "a" / "flash" / "config.json").read_text())
    assert cfg["lock_id"] == lid and len(bytes.fromhex(cfg["secret"])) == 32
    # the key itself is nowhere on the flash: only its digest under the lock's secret
    secret = bytes.fromhex(cfg["secret"])
    assert cfg["backup_digest"] == hmac.new(secret, b"1234", hashlib.sha256).hexdigest()
    for f in (tmp_path / "a" / "flash").iterdir():
        data = json.loads(f.read_text()) if f.suffix == ".json" else {}
        assert "1234" not in [v for v in data.values() if isinstance(v, str)], f
        assert not any(isinstance(v, int) and v == 1234 for v in data.values()), f
    for bad in ("12a4", "123", "12345", "", "１２３４"):
        r = init(tmp_path / "b", "--backup-key", bad)
        assert r.returncode == 2 and "backup key" in r.stderr, bad
        assert not (tmp_path / "b" / "flash" / "config.json").exists()


def test_backup_key_opens_then_relay_closes(lockdir):
    with SimLock(lockdir) as s:
        assert s.boot[0]["event"] == "ready"
        ev = s.send(BACKUP)
        assert s.kinds(ev, "relay", "state") == ["open"]
        assert s.kinds(ev, "feedback") == ["accepted"]
        assert s.kinds(ev, "relay", "state") == ["open"]
        ev = s.send("!advance 5")
        assert s.kinds(ev, "relay", "state") == ["closed"]
        st = s.status()
        assert st["backup_first_used"] is None and st["backup_used"]


def test_codes_need_time_lockout_survives_power_cycle(lockdir):
    with SimLock(lockdir) as s:
        ev = s.send("!codes 1 7:4821:-60:+3600")
        assert s.kinds(ev, "codeset", "ok") == [True]
        ev = s.send("4821")
        assert s.kinds(ev, "feedback") == ["refused"] and s.kinds(ev, "log", "reason") == ["no_time"]
        assert s.kinds(s.send("!time"), "time", "ok") == [True]
        ev = s.send("4821")
        assert s.kinds(ev, "feedback") == ["accepted"] and s.kinds(ev, "log", "code_id") == [7]
        s.send("!advance 6")
        for i in range(4):
            assert s.kinds(s.send("0000"), "feedback") == ["refused"]
        ev = s.send("0000")
        assert s.kinds(ev, "feedback") == ["locked_out"] and s.kinds(ev, "log", "seconds") == [None, 30]
        ev = s.send("!power-cycle")
        assert [e["event"] for e in ev][:1] == ["power"] and any(e["event"] == "ready" for e in ev)
        # no RTC: no trusted time after the power cut; the lockout is still there
        ev = s.send(BACKUP)
        assert "open" not in s.kinds(ev, "relay", "state") and "locked_out" in s.kinds(ev, "feedback")
        s.send("!advance 31")
        ev = s.send("4821")
        # a real code refused for want of trusted time counts like any refusal: the 6th in a row locks out
        assert s.kinds(ev, "log", "reason") == ["no_time", None] and s.kinds(ev, "log", "seconds") == [None, 60]
        assert s.kinds(ev, "feedback") == ["locked_out"]
        s.send("!advance 61")
        ev = s.send(BACKUP)
        assert s.kinds(ev, "relay", "state") == ["open"]
        assert s.status()["fails"] == 0


def test_rotation_due_persisted_until_new_backup(lockdir):
    with SimLock(lockdir) as s:
        s.send("!time")
        s.send(BACKUP)
        first = s.status()["backup_first_used"]
        assert first is not None
        s.send("!advance 86390")
        assert not s.status()["rotation_due"]
        ev = s.send("!advance 20")
        assert "rotation_due" in s.kinds(ev, "log")
        s.send("!power-cycle")
        st = s.status()
        assert st["rotation_due"] and st["backup_first_used"] == first
        assert s.kinds(s.send(BACKUP), "relay", "state") == ["open"]  # the old key still opens
        s.send("!advance 6")
        ev = s.send("!codes 2 backup=7305")
        assert s.kinds(ev, "codeset", "ok") == [True]
        st = s.status()
        assert not st["rotation_due"] and st["backup_first_used"] is None
        assert s.kinds(s.send(BACKUP), "feedback") == ["refused"]
        assert s.kinds(s.send("7305"), "feedback") == ["accepted"]


def test_rtc_keeps_time_across_power_cycle(tmp_path):
    d = tmp_path / "lock"
    assert init(d, "--backup-key", BACKUP, "--rtc", "--epoch", str(T0)).returncode == 0
    with SimLock(d) as s:
        assert s.status()["trusted_now"] == T0  # the simulated DS3231 runs (no oscillator stop)
        s.send("!codes 1 3:2468:+0:+100")
        s.send("!power-cycle")
        st = s.status()
        assert st["rtc"] and st["time_source"] == "rtc" and st["trusted_now"] is not None
        assert s.kinds(s.send("2468"), "feedback") == ["accepted"]
        assert s.kinds(s.send("!time -3600"), "time", "ok") == [False]


def test_entry_timeout_and_keys_while_busy(lockdir):
    with SimLock(lockdir) as s:
        s.send("58")
        ev = s.send("!advance 11")
        assert {"event": "entry", "cleared": "timeout"} in ev
        ev = s.send("!busy 1500 " + BACKUP)
        assert s.kinds(ev, "relay", "state") == ["open"]
        assert "".join(s.kinds(ev, "key", "key")) == BACKUP


def test_heap_with_200_codes_and_100_entries(lockdir):
    with SimLock(lockdir) as s:
        ev = s.send("!gen-codes 1 200")
        assert s.kinds(ev, "codeset", "count") == [200]
        s.send("!time")
        s.send("!power-cycle")
        st = s.status()
        assert st["codes"] == 200
        boot_heap = st["heap_used"]
        for i in range(100):
            code = "9%03d" % i if i % 3 == 2 else "%04d" % (i % 200)  # one in three wrong, never 5 in a row
            s.send(code)
            if i % 10 == 0:
                s.send("!advance 6")
        st = s.status()
        assert st["heap_used"] < 100 * 1024
        assert boot_heap < 100 * 1024


def test_power_cut_at_random_instants(lockdir):
    """SIGKILL the firmware at random instants while it persists; the store is intact after each reboot."""
    rnd = random.Random(2)
    best_rev = 0
    best_seq = 0
    rev = 0
    for round_ in range(8):
        s = SimLock(lockdir)
        st = s.status()
        assert st["revision"] >= best_rev and st["last_seq"] > best_seq, (st, best_rev, best_seq)
        assert st["has_backup"]
        rev = st["revision"]
        # queue work that writes to flash, then cut the power at a random moment while it runs
        lines = []
        for _ in range(30):
            rev += 1
            lines.append(f"!codes {rev} {rev}:{rnd.randrange(10000):04d}:+0:+1000 {rev + 1000}:1357:+0:+9")
            lines.append("0000")
        assert s.proc.stdin is not None and s.proc.stdout is not None
        for line in lines:
            s.proc.stdin.write(line + "\n")
        s.proc.stdin.flush()
        cut = threading.Timer(rnd.uniform(0.05, 0.6), s.kill)
        cut.start()
        for line in s.proc.stdout:  # until the power cut ends the output
            ev = json.loads(line)
            if ev["event"] == "codeset" and ev["ok"]:
                best_rev = max(best_rev, ev["revision"])
            if ev["event"] == "log":
                best_seq = max(best_seq, ev["seq"])
        cut.join()
        s.kill()
    with SimLock(lockdir) as s:
        st = s.status()
        assert st["revision"] >= best_rev and st["last_seq"] > best_seq
        fb = s.kinds(s.send(BACKUP), "feedback")
        assert fb == ["accepted"] or (fb and set(fb) == {"locked_out"}), fb


def test_crash_releases_relay_and_reboots(lockdir):
    with SimLock(lockdir) as s:
        assert s.kinds(s.send(BACKUP), "relay", "state") == ["open"]
        ev = s.send("!crash")
        names = [e["event"] for e in ev]
        assert names.index("relay") < names.index("crash") < names.index("ready")
        assert s.kinds(ev, "relay", "state") == ["closed"] and "crash" in s.kinds(ev, "log")
        st = s.status()
        assert st["boot_count"] == 2 and st["backup_used"]


def test_the_simulated_board_runs_over_an_installed_firmware(lockdir, tmp_path):
    """A flash the installer wrote holds the whole firmware, with the device's board.py that imports
    machine and network: the simulator must still boot its simulated board and the firmware built from
    device/, never those copies (MicroPython puts the working directory, the flash, first on its path)."""
    import shutil

    from tools import bundle

    b = bundle.build("host", tmp_path / "bundle", mip_index=False)
    flash = lockdir / "flash"
    for f in b.files:
        (flash / f.dest).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(b.out / f.dest, flash / f.dest)
    assert (flash / "board.mpy").exists() and (flash / "boot.py").exists() and (flash / "main.py").exists()
    # and a source copy of the device's board module, which MicroPython would prefer to the .mpy
    shutil.copyfile(bundle.DEVICE_DIR / "board.py", flash / "board.py")
    with SimLock(lockdir) as s:
        assert [e["event"] for e in s.boot][:1] == ["ready"], s.boot
        ev = s.send(BACKUP)
        assert s.kinds(ev, "relay", "state") == ["open"]  # the simulated relay pin, so the simulated board
