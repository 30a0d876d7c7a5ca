"""The boot clock: the simulated board's system clock reads 2000-01-01 at every boot, as an ESP32's after a power
cut, and the lock never starts TLS before setting it, from its RTC or by SNTP (a real UDP query to the loopback
SNTP server tools/simlock runs). SNTP time is good enough for certificate dates, never trusted for codes."""
from __future__ import annotations

import json
import time

import pytest

from certs import make_ca
from linkrig import broker, make_lock, status
from test_link_tls import Impostor, pki  # noqa: F401  (the PKI fixture)

pytestmark = [pytest.mark.e2e]




def test_no_rtc_and_no_sntp_means_no_tls_yet_the_backup_key_opens(pki, tmp_path, env):  # noqa: F811
    imp = Impostor(tmp_path, pki["good"])  # a server the lock would trust: any attempt would show here
    lk = make_lock(tmp_path, {"host": "localhost", "port": imp.port}, pki["ca"], env, world={"sntp": False})
    try:
        err = lk.link_event("error", timeout=60)
        assert err["error"].startswith("OSError('clock: not set"), err
        lk.cmd("!codes 3 1:4821:-60:+3600")
        assert lk.enter("4821")[0] == "refused"  # no trusted time: windowed codes are refused
        key = json.loads((lk.dir / "world.json").read_text())["backup_key"]
        assert lk.enter(key)[0] == "open"
        time.sleep(3)  # and it keeps not trying
        assert status(lk)["trusted_now"] is None
    finally:
        lk.stop()
        seen = imp.stop()
    assert seen == b"" and imp.attempts() == 0
    assert not [e for e in lk.events if e.get("event") == "link" and e.get("state") == "connected"]


def test_sntp_sets_the_clock_then_tls_and_sntp_is_not_trusted_time(tmp_path, env):
    ca = make_ca(tmp_path / "ca", "Clock CA")
    b = broker(tmp_path, ca).start()
    lk = make_lock(tmp_path, {"host": "localhost", "port": b.tls_port}, ca, env)
    try:
        clock = lk.wait(lambda e: e.get("event") == "clock", 60, 0, "the SNTP answer")
        assert clock["source"] == "sntp" and abs(clock["epoch"] - time.time()) < 5
        lk.link_event("state", "connected", timeout=60)
        assert status(lk)["trusted_now"] is None  # no cloud here answered the hello: SNTP alone opens nothing
    finally:
        lk.stop()
        b.stop()


def test_the_rtc_sets_the_clock_without_sntp(tmp_path, env):
    ca = make_ca(tmp_path / "ca", "Clock CA")
    b = broker(tmp_path, ca).start()
    lk = make_lock(tmp_path, {"host": "localhost", "port": b.tls_port}, ca, env, world={"sntp": False}, rtc=True)
    try:
        lk.link_event("state", "connected", timeout=60)
        assert not [e for e in lk.events if e.get("event") == "clock"]  # no SNTP was needed
        ready = next(e for e in lk.events if e.get("event") == "ready")
        assert ready.get("rtc", True)
        time.sleep(2)
        st = status(lk)
        print("rtc lock connected: heap free", st["heap_free"])
        assert st["time_source"] == "rtc"
    finally:
        lk.stop()
        b.stop()
