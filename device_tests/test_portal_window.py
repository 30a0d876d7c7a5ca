"""The setup portal's window on a provisioned lock (config.portal_window, docs/firmware.md "Setup portal"): the
unchanged firmware (main.py) on the simulated board under its heap cap, powered up with the setup button held
(SETUP_PORT), driven line by line like tools/simlock. A real HTTP client finds the portal answering; once the
virtual clock has passed portal_minutes the port refuses connections and the access point is closed, while
the backup key and a code still open the door."""
import json
import os
import socket
import subprocess
import urllib.request

import pytest

from sim import driver as simdriver, mpbuild, realtime_host
from device_tests.test_portal import MICROPYTHON, free_port

LOCK_ID = "02cafe0000dd"


class SetupLock(simdriver.SimLock):
    """SimLock's line-by-line driving, but the firmware process (-m main) is started here: with the setup
    button held (SETUP_PORT) and microdot on the module path, which tools/simlock run does not offer."""

    def __init__(self, d, port):
        env = dict(os.environ, MICROPYPATH=realtime_host.build(), SIMLOCK_DIR=str(d), SETUP_PORT=str(port))
        self.proc = subprocess.Popen(mpbuild.command() + ["-m", "main"], env=env, cwd=str(mpbuild.ROOT),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, bufsize=1, start_new_session=True)
        self.boot = self._until_settled()

    def close(self):
        super().close()
        return self.proc.stderr.read()


def page(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/" % port, timeout=10) as r:
        return r.status, r.read().decode()


@pytest.fixture
def lock_dir(tmp_path):
    if not MICROPYTHON:
        pytest.skip("micropython not installed")
    d = tmp_path / "lock"
    r = simdriver.init(d, "--backup-key", "5820", "--lock-id", LOCK_ID)
    assert r.returncode == 0, r.stderr
    return d


def _set_minutes(d, minutes):
    cfg_path = d / "flash" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    if minutes is not None:
        cfg["portal_minutes"] = minutes
    cfg_path.write_text(json.dumps(cfg))


@pytest.mark.parametrize("minutes", [None, 2])
def test_portal_closes_after_its_window_and_codes_keep_working(lock_dir, minutes):
    window_s = (minutes or 10) * 60
    _set_minutes(lock_dir, minutes)
    port = free_port()
    s = SetupLock(lock_dir, port)
    try:
        assert {"event": "ap", "essid": "KeyDrop-0000DD"} in s.boot
        status, html = page(port)
        assert status == 200 and LOCK_ID in html
        ev = s.send("!advance %d" % (window_s - 30))  # inside the window: still open
        assert not [e for e in ev if e["event"] == "ap"]
        assert page(port)[0] == 200
        ev = s.send("!advance 31")  # past it: the service closed the server and the board the AP
        assert {"event": "ap", "state": "off"} in ev
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        ev = s.send("5820")  # the backup key
        assert simdriver.SimLock.kinds(ev, "relay", "state") == ["open"]
        s.send("!advance 6")
        s.send("!time")
        ev = s.send("!codes 1 7:4711:-60:+3600")
        assert simdriver.SimLock.kinds(ev, "codeset", "ok") == [True]
        ev = s.send("4711")
        assert simdriver.SimLock.kinds(ev, "relay", "state") == ["open"]
        assert [e["code_id"] for e in ev if e.get("kind") == "opened"] == [7]
        ev = s.send("!advance 3600")  # and it stays closed
        assert not [e for e in ev if e["event"] == "ap"]
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
    finally:
        err = s.close()
    assert s.proc.returncode == 0, err
    assert "MemoryError" not in err and "Traceback" not in err, err


def test_a_power_cycle_opens_a_new_window(lock_dir):
    port = free_port()
    s = SetupLock(lock_dir, port)
    try:
        assert {"event": "ap", "state": "off"} in s.send("!advance 601")
        s.proc.stdin.write("!power-cycle\n")
        s.proc.stdin.flush()
        assert s.proc.wait(timeout=10) == 75  # the firmware ended: power cut
    finally:
        s.close()
    s = SetupLock(lock_dir, port)  # powered up again, the button still held
    try:
        assert any(e["event"] == "ap" and "essid" in e for e in s.boot)
        assert page(port)[0] == 200
    finally:
        s.close()
