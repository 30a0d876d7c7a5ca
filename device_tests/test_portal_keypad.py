"""Virtual keypad page (device_tests/keypad_page.py) on the unix port, with a recording fake keypad."""
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from device_tests.test_portal import HEAP, MICROPYTHON, ROOT, free_port, mpylib  # noqa: F401 (fixture)


@pytest.fixture
def page(mpylib):  # noqa: F811
    port = free_port()
    env = dict(os.environ, MICROPYPATH=".frozen:%s:%s:%s" % (ROOT / "device", ROOT / "device_tests", mpylib))
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
    proc = subprocess.Popen([sys.executable, "-m", "device_tests.realtime_host", str(d), "--keypad-port", str(port)],
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
