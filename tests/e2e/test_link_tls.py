"""TLS authenticates the broker: the simulated lock (the firmware on the unix port at the 128k heap cap) refuses
impostor servers before sending a single MQTT byte, refuses to connect at all when configured for TLS without a
CA, and works with a real mosquitto presenting an EC P-256 or an RSA-2048 chain, a full 200-code state
included."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from certs import issue, make_ca, self_signed
from e2e_stack import SimLock, wait_until
from linkrig import LOCK_ID, broker, cloud_client, make_lock, secret_of, state_payload, status
from tools.mosquitto import free_port, wait_port

pytestmark = [pytest.mark.e2e]

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


def _lock(tmp: Path, port: int, ca: Path | None, env: dict) -> SimLock:
    return make_lock(tmp, {"host": "localhost", "port": port}, ca, env, name=f"lock-{port}")


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


@pytest.mark.parametrize("kind", ["ec", "rsa"])
def test_real_broker_with_an_ec_or_rsa_chain_installs_200_codes(pki, tmp_path, env, kind):
    ca = pki["ca"] if kind == "ec" else pki["rsa_ca"]
    b = broker(tmp_path, ca, kind).start()
    lk = None
    c = None
    try:
        lk = _lock(tmp_path, b.tls_port, ca, env)
        lk.link_event("state", "connected", timeout=60)
        boot = status(lk)
        c = cloud_client(b, ca)
        c.publish(f"lock/{LOCK_ID}/down", state_payload(secret_of(lk), 200), qos=1, retain=True).wait_for_publish(10)
        ev = lk.wait(lambda e: e.get("event") == "link" and e.get("codes") == 200, 60, 0, "200 codes installed")
        assert ev["codeset"] == 4242
        lk.cmd("!time")  # no cloud here to answer the hello with signed time
        assert lk.enter("1199")[0] == "open"
        st = status(lk)
        link = [e for e in lk.events if e.get("event") == "link"]
        assert not [e for e in link if "refused" in e or e.get("state") == "offline"], link
        print(f"{kind} chain at 128k: heap free after boot {boot['heap_free']}, with 200 codes {st['heap_free']}")
    finally:
        if c is not None:
            c.loop_stop()
            c.disconnect()
        if lk is not None:
            lk.stop()
        b.stop()
