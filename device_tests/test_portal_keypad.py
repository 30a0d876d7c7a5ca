"""Virtual keypad page (sim/demo/keypad_page.py) on the unix port, with a recording fake keypad."""
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from device_tests.test_portal import HEAP, MICROPYTHON, ROOT, free_port, mpylib  # noqa: F401 (fixture)


@pytest.fixture
def page(mpylib):  # noqa: F811
    port = free_port()
    env = dict(os.environ, MICROPYPATH=".frozen:%s:%s:%s:%s" % (ROOT / "device", ROOT / "sim" / "demo", ROOT / "device_tests", mpylib))
    proc = subprocess.Popen([MICROPYTHON, "-X", "heapsize=" + HEAP, str(ROOT / "device_tests" / "keypad_page_serve.py"),
                             str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = "http://127.0.0.1:%d" % port
    deadline = time.monotonic() + 10
    while True:
        try:
            urllib.request.urlopen(base + "/state.json", timeout=1).read()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(proc.stdout.read().decode())
            time.sleep(0.05)
    yield base
    proc.kill()
    proc.wait()


def post(base, key):
    req = urllib.request.Request(base + "/press", data=("key=" + urllib.request.quote(key)).encode(),
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_page_has_twelve_keys_and_door_state(page):
    html = urllib.request.urlopen(page + "/").read().decode()
    for k in "0123456789*#":
        assert "data-key='%s'" % k in html
    assert 'id=door' in html and "24a16054ab3c" in html


def test_press_is_held_then_released_in_order(page):
    for k in "4821":
        assert post(page, k)[0] == 200
    status, st = post(page, "#")
    assert status == 200 and st["door"] == "open"
    assert st["events"] == "+4 -4 +8 -8 +2 -2 +1 -1 +# -#"


def test_concurrent_presses_never_overlap(page):
    threads = [threading.Thread(target=post, args=(page, k)) for k in "123"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ev = json.loads(urllib.request.urlopen(page + "/state.json").read())["events"].split()
    assert len(ev) == 6
    assert all(ev[i][1] == ev[i + 1][1] and ev[i][0] == "+" and ev[i + 1][0] == "-" for i in range(0, 6, 2))


@pytest.mark.parametrize("key", ["", "a", "12", "##"])
def test_bad_keys_are_refused(page, key):
    assert post(page, key)[0] == 400
    ev = json.loads(urllib.request.urlopen(page + "/state.json").read())["events"]
    assert ev == ""


def test_realtime_lock_opens_from_its_own_keypad_page(tmp_path):
    """The firmware on the simulated board in real time serves the page; presses go through the fake matrix
    pins and the firmware's scan; the backup key opens the door, which the page's state shows, then closes."""
    port = free_port()
    d = tmp_path / "lock"
    subprocess.run([sys.executable, str(ROOT / "tools" / "simlock"), "init", str(d), "--backup-key", "5820",
                    "--lock-id", "02cafe0000aa"], check=True, capture_output=True)
    cfg = json.loads((d / "flash" / "config.json").read_text())
    cfg["relay_ms"] = 1500
    (d / "flash" / "config.json").write_text(json.dumps(cfg))
    proc = subprocess.Popen([sys.executable, "-m", "sim.realtime_host", str(d), "--keypad-port", str(port)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = "http://127.0.0.1:%d" % port
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                st = json.loads(urllib.request.urlopen(base + "/state.json", timeout=1).read())
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read().decode()
                time.sleep(0.2)
        assert st["door"] == "closed" and st["mac"] == "02cafe0000aa"
        assert "data-key='5'" in urllib.request.urlopen(base + "/").read().decode()
        for k in "582":
            assert post(base, k)[1]["digits"] >= 1
        status, st = post(base, "0")
        assert status == 200
        deadline = time.monotonic() + 5
        while st["door"] != "open":
            assert time.monotonic() < deadline, st
            st = json.loads(urllib.request.urlopen(base + "/state.json").read())
        deadline = time.monotonic() + 10
        while st["door"] != "closed":
            assert time.monotonic() < deadline, st
            time.sleep(0.1)
            st = json.loads(urllib.request.urlopen(base + "/state.json").read())
    finally:
        proc.terminate()
        try:
            assert proc.wait(10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _realtime_lock(tmp_path, keypad_port, setup_port, heap, lock_id="02cafe0000cc"):
    d = tmp_path / "lock"
    subprocess.run([sys.executable, str(ROOT / "tools" / "simlock"), "init", str(d), "--backup-key", "5820",
                    "--lock-id", lock_id], check=True, capture_output=True)
    proc = subprocess.Popen([sys.executable, "-m", "sim.realtime_host", str(d), "--keypad-port",
                             str(keypad_port), "--setup-port", str(setup_port), "--heap", heap],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return d, proc


def _wait_page(url, proc, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.read().decode()
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read().decode()
            time.sleep(0.2)


def _stop(proc):
    proc.terminate()
    try:
        out = proc.communicate(timeout=10)[0].decode()
    except subprocess.TimeoutExpired:
        proc.kill()
        out = proc.communicate()[0].decode()
    return out


def test_setup_button_portal_on_the_firmware_at_its_heap_cap(tmp_path):
    """The unchanged firmware (main.py) with the setup button held, on the simulated board under the
    firmware's own heap cap (128k): the portal runs as a lock service and saves into the lock's config.json."""
    port = free_port()
    d, proc = _realtime_lock(tmp_path, 0, port, "128k")
    base = "http://127.0.0.1:%d/" % port
    try:
        html = _wait_page(base, proc)
        assert "02cafe0000cc" in html
        token = html.split("name=token value='")[1].split("'")[0]
        body = urllib.parse.urlencode({"token": token, "ssid": "Flat 3", "password": "s3cret-Passw0rd!",
                                       "cloud": "mqtts://broker.example:8883"}).encode()
        with urllib.request.urlopen(urllib.request.Request(base, data=body), timeout=10) as r:
            page = r.read().decode()
        assert "Settings saved" in page and "s3cret-Passw0rd!" not in page
        for _ in range(5):
            assert "02cafe0000cc" in _wait_page(base, proc)
    finally:
        out = _stop(proc)
    assert "MemoryError" not in out, out
    cfg = json.loads((d / "flash" / "config.json").read_text())
    assert cfg["wifi"] == {"ssid": "Flat 3", "password": "s3cret-Passw0rd!"}
    assert cfg["mqtt"]["host"] == "broker.example" and cfg["mqtt"]["tls"] is True
    assert cfg["lock_id"] == "02cafe0000cc" and len(cfg["secret"]) == 64  # provisioning kept


def test_codes_keep_working_while_the_portal_is_open(tmp_path):
    kp, sp = free_port(), free_port()
    d, proc = _realtime_lock(tmp_path, kp, sp, "256k")
    try:
        assert "Cloud address" in _wait_page("http://127.0.0.1:%d/" % sp, proc)
        _wait_page("http://127.0.0.1:%d/state.json" % kp, proc)
        base = "http://127.0.0.1:%d" % kp
        for k in "5820":
            post(base, k)
        deadline = time.monotonic() + 5
        while json.loads(urllib.request.urlopen(base + "/state.json").read())["door"] != "open":
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        out = _stop(proc)
    assert '"event": "ap"' in out
