"""TLS authenticates the broker: the simulated lock (the firmware on the unix port at the 128k heap cap) refuses
impostor servers before sending a single MQTT byte, refuses to connect at all when configured for TLS without a
CA, and works with a real mosquitto presenting an EC P-256 or an RSA-2048 chain, a full 200-code state
included."""
from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from certs import issue, make_ca, self_signed
from e2e_stack import PY, ROOT, SimLock, mosquitto_available, wait_until
from tools.mosquitto import Mosquitto, dynsec_client, free_port, wait_port

pytestmark = [pytest.mark.e2e]

LOCK_ID = "24a16054ab77"
LOCK_PW = "lock-password-77"
BRIDGE_PW = "bridge-password-77"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ca = make_ca(d / "ca", "KeyDrop test CA")
    other = make_ca(d / "other", "Some other CA")
    return {
        "ca": ca,
        "good": issue(ca, d / "good"),
        "self_signed": self_signed(d / "self"),
        "other_ca": issue(other, d / "other-srv"),
        "wrong_name": issue(ca, d / "wrong", name="broker.example.net"),
        "expired": issue(ca, d / "expired", expired=True),
        "rsa_ca": make_ca(d / "rsa", "KeyDrop RSA CA", kind="rsa"),
    }


def _lock(tmp: Path, port: int, ca: Path | None, env: dict, host: str = "localhost") -> SimLock:
    d = tmp / f"lock-{port}"
    r = subprocess.run([PY, str(ROOT / "tools" / "simlock"), "init", str(d), "--lock-id", LOCK_ID],
                       cwd=str(ROOT), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    cfg_path = d / "flash" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["mqtt"] = {"host": host, "port": port, "tls": True, "username": LOCK_ID, "password": LOCK_PW}
    if ca is not None:
        shutil.copy(ca / "ca.crt", d / "flash" / "ca.crt")
        cfg["mqtt"]["ca"] = "ca.crt"
    cfg_path.write_text(json.dumps(cfg))
    return SimLock(d, env).start()


class Impostor:
    """openssl s_server with a certificate the lock must refuse; records the application bytes it receives."""

    def __init__(self, tmp: Path, cert_dir: Path):
        self.port = free_port()
        self.out = tmp / f"seen-{self.port}.bin"
        self.err = tmp / f"s_server-{self.port}.log"
        self.p = subprocess.Popen(["openssl", "s_server", "-accept", str(self.port), "-cert",
                                   str(cert_dir / "server.crt"), "-key", str(cert_dir / "server.key"), "-quiet"],
                                  stdin=subprocess.PIPE, stdout=open(self.out, "wb"), stderr=open(self.err, "wb"))
        wait_port(self.port)

    def attempts(self) -> int:
        """Failed handshakes, not counting wait_port's probe (a connection closed without a ClientHello)."""
        n = self.err.read_text(errors="replace").count("ERROR") if self.err.exists() else 0
        return max(0, n - 1)

    def stop(self) -> bytes:
        self.p.stdin.close()  # s_server ends at EOF on its input
        try:
            self.p.wait(5)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        return self.out.read_bytes()


@pytest.fixture
def env():
    if not mosquitto_available():
        pytest.skip("mosquitto is not installed")
    import os
    e = dict(os.environ)
    e.pop("SIMLOCK_DIR", None)
    return e


@pytest.mark.parametrize("kind", ["self_signed", "other_ca", "wrong_name", "expired"])
def test_an_impostor_broker_gets_no_mqtt_byte(pki, tmp_path, env, kind):
    imp = Impostor(tmp_path, pki[kind])
    lk = _lock(tmp_path, imp.port, pki["ca"], env)
    try:
        err = lk.link_event("error", timeout=60)
        assert "mqtt" not in err["error"] and err["error"] != "wifi", err
        wait_until(lambda: imp.attempts() >= 2, 60, "a second handshake attempt (the lock retries)")
        assert not any(e.get("state") == "connected" for e in lk.events if e.get("event") == "link")
    finally:
        lk.stop()
        seen = imp.stop()
    print(f"impostor {kind}: {len(seen)} bytes seen after {imp.attempts()} handshakes; lock error {err['error']}")
    assert seen == b""


def test_the_harness_sees_the_connect_when_the_certificate_is_right(pki, tmp_path, env):
    """The control for the test above: a server the lock trusts does receive its MQTT CONNECT."""
    imp = Impostor(tmp_path, pki["good"])
    lk = _lock(tmp_path, imp.port, pki["ca"], env)
    try:
        wait_until(lambda: imp.out.stat().st_size > 0, 60, "the lock's CONNECT")
    finally:
        lk.stop()
        seen = imp.stop()
    assert seen[0] == 0x10 and b"MQTT" in seen[:16] and LOCK_ID.encode() in seen


def test_tls_without_a_ca_never_connects(pki, tmp_path, env):
    imp = Impostor(tmp_path, pki["good"])
    lk = _lock(tmp_path, imp.port, None, env)
    try:
        err = lk.link_event("error", timeout=60)
        assert "no CA certificate" in err["error"] and "mqtt.ca" in err["error"], err
        time.sleep(3)  # it keeps refusing: give it time to try again
    finally:
        lk.stop()
        seen = imp.stop()
    assert seen == b"" and imp.attempts() == 0 and "ACCEPT" not in imp.err.read_text()


def _state_payload(secret: bytes, n: int) -> bytes:
    import hashlib
    import hmac
    from cloud.bridge import Envelope, encode_state
    now = int(time.time())
    codes = [{"id": 1000 + i, "digest": hmac.new(secret, b"%04d" % (1000 + i), hashlib.sha256).digest(),
              "from": now - 60, "until": now + 86400 + i} for i in range(n)]
    body = encode_state({"revision": 4242, "codes": codes, "backup_digest": None})
    return Envelope(secret).seal(f"lock/{LOCK_ID}/down", body)


@pytest.mark.parametrize("kind", ["ec", "rsa"])
def test_real_broker_with_an_ec_or_rsa_chain_installs_200_codes(pki, tmp_path, env, kind):
    import paho.mqtt.client as mqtt
    import ssl
    ca = pki["ca"] if kind == "ec" else pki["rsa_ca"]
    srv = issue(ca, tmp_path / f"srv-{kind}", kind=kind)
    tls = tmp_path / "tls"
    tls.mkdir()
    for name in ("server.crt", "server.key"):
        shutil.copy(srv / name, tls / name)
    shutil.copy(ca / "ca.crt", tls / "ca.crt")
    broker = Mosquitto(tmp_path / "mqtt", tls=True, tls_dir=tls, bridge_password=BRIDGE_PW,
                       extra_clients=[dynsec_client(LOCK_ID, LOCK_PW, clientid="kd-" + LOCK_ID)])
    broker.start()
    lk = None
    c = None
    try:
        lk = _lock(tmp_path, broker.tls_port, ca, env)
        lk.link_event("state", "connected", timeout=60)
        lk.cmd("!status")
        boot = next(e for e in reversed(lk.events) if e.get("event") == "status")
        secret = bytes.fromhex(json.loads((lk.dir / "flash" / "config.json").read_text())["secret"])
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="t-bridge")
        c.username_pw_set("bridge", BRIDGE_PW)
        c.tls_set_context(ssl.create_default_context(cafile=str(ca / "ca.crt")))
        c.connect("localhost", broker.tls_port, 30)
        c.loop_start()
        c.publish(f"lock/{LOCK_ID}/down", _state_payload(secret, 200), qos=1, retain=True).wait_for_publish(10)
        ev = lk.wait(lambda e: e.get("event") == "link" and e.get("codes") == 200, 60, 0, "200 codes installed")
        assert ev["codeset"] == 4242
        lk.cmd("!time")  # no cloud here to answer the hello with signed time
        assert lk.enter("1199")[0] == "open"
        lk.cmd("!status")
        st = next(e for e in reversed(lk.events) if e.get("event") == "status")
        link = [e for e in lk.events if e.get("event") == "link"]
        assert not [e for e in link if "refused" in e or e.get("state") == "offline"], link
        print(f"{kind} chain at 128k: heap free after boot {boot['heap_free']}, with 200 codes {st['heap_free']}")
    finally:
        if c is not None:
            c.loop_stop()
            c.disconnect()
        if lk is not None:
            lk.stop()
        broker.stop()
