"""Over-the-air firmware updates end to end: `flask --app cloud firmware keygen|build|rollout`, mosquitto, the
bridge, and a lock simulated by `tools/simlock` (the firmware on the MicroPython unix port, booting through
its selector). In file order, like a lock's life: a release signed by the wrong key is refused; v0.2.0 is
fetched (a power cut in the middle resumes), switched to at boot and reported in the hello; a v0.3.0 whose
main.py raises at boot is rolled back to v0.2.0, the cloud shows it and halts the rollout. A code opens the
door throughout. The lock holds a full set of 200 codes (see HEAP).
"""
from __future__ import annotations

import subprocess
import time
from datetime import datetime, timezone

import pytest

from e2e_stack import FLASK, ROOT, Stack, mosquitto_available, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MAC = "24a16054ac01"
# The board's cap: an updated lock with 200 codes, a rollback and a refusal to tell, holds its TLS link at 128k
# (docs/ota.md, "Memory").
HEAP = "128k"
CODES = 200  # a full code set (protocol.MAX_CODES)


@pytest.fixture(scope="module")
def st(tmp_path_factory):
    if not mosquitto_available():
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    d = tmp_path_factory.mktemp("ota")
    s = Stack(d)
    s.env["E2E_HEAP"] = HEAP
    key = d / "release.key"
    s.env["FIRMWARE_SIGNING_KEY"] = str(key)
    r = flask(s, "firmware", "keygen", "--out", str(key))
    assert r.returncode == 0 and "public key" in r.stdout, r.stderr
    with s.running():
        yield s


def flask(s: Stack, *args, env=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([FLASK, "--app", "cloud", *args], env=env or s.env, cwd=str(ROOT), capture_output=True,
                          text=True, timeout=timeout)


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat()


@pytest.fixture(scope="module")
def lock(st):
    lk = st.new_lock(MAC)
    lk.link_event("state", "connected", timeout=90)
    wait_until(lambda: st.api("GET", f"/api/v1/locks/{MAC}")[1].get("status") == "active", 30, "the lock active")
    now = time.time()
    st_, code = st.api("POST", f"/api/v1/locks/{MAC}/codes", {"valid_from": iso(now - 60),
                                                              "valid_until": iso(now + 7 * 86400)})
    assert st_ == 201, code
    wait_until(lambda: st.api("GET", f"/api/v1/codes/{code['id']}")[1].get("on_lock_at"), 60, "code on the lock")
    lk.code = code["code"]
    m = lk.mark()
    _fill_code_set(st, now, CODES - 1)
    lk.wait(lambda e: e.get("event") == "link" and e.get("codes") == CODES, 120, m, "a full code set on the lock")
    yield lk
    # the lock's events, kept beside its flash and logs for whoever reads a failure
    import json
    (lk.dir / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lk.events))


def _fill_code_set(st, now: float, n: int) -> None:
    """n more codes on the lock, made by the cloud's domain code in one transaction (the API would take a
    request, a state and an acknowledgement per code)."""
    import sqlalchemy as sa

    from cloud import domain
    from cloud.extensions import db
    from cloud.models import Lock, User

    with st.db() as s:
        lock = s.get(Lock, MAC)
        owner = s.scalar(sa.select(User).where(User.email == st.owner_email))
        for i in range(n):
            domain.generate_code(lock, valid_from=datetime.fromtimestamp(now - 60, timezone.utc),
                                 valid_until=datetime.fromtimestamp(now + 7 * 86400 + i, timezone.utc), by=owner)
        db.session.commit()


def fw_of(st) -> dict:
    status, body = st.api("GET", f"/api/v1/locks/{MAC}")
    assert status == 200, body
    return body


def build(st, version, device_dir=None, env=None):
    args = ["firmware", "build", "--version", version, "--target", "host"]
    if device_dir:
        args += ["--device-dir", str(device_dir)]
    r = flask(st, *args, env=env)
    assert r.returncode == 0, r.stderr + r.stdout
    return r.stdout


def rollout(st, version):
    r = flask(st, "firmware", "rollout", "--version", version, "--lock", MAC)
    assert r.returncode == 0, r.stderr + r.stdout
    return r.stdout


def after(lk, ev) -> int:
    """The index just after event ev in the lock's event list (to wait for what follows it)."""
    return next(i for i, e in enumerate(lk.events) if e is ev) + 1


def opens(lk) -> None:
    outcome, _ = lk.enter(lk.code)
    assert outcome == "open"


def test_the_lock_gets_the_release_key_in_its_provisioning(st, lock):
    import json
    cfg = json.loads((lock.dir / "flash" / "config.json").read_text())
    out = flask(st, "firmware", "keygen", "--out", str(st.tmp / "release.key"))
    assert out.returncode != 0  # never overwritten
    from cloud.firmware.release import public_key_hex
    assert cfg["fw_pubkey"] == public_key_hex(st.env["FIRMWARE_SIGNING_KEY"])
    assert fw_of(st)["firmware_version"] == "0.1.0"


def small_bundle(st, name, main_py: str):
    """A firmware tree of just main.py and version.py: quick to fetch, enough for the cases that never run
    (a refused release) or fail at once (a main.py that raises)."""
    d = st.tmp / name
    d.mkdir()
    (d / "main.py").write_text(main_py)
    (d / "version.py").write_text('VERSION = "0"\n')
    return d


def test_a_release_signed_by_another_key_is_refused(st, lock):
    other = st.tmp / "other.key"
    assert flask(st, "firmware", "keygen", "--out", str(other)).returncode == 0
    build(st, "0.1.5", device_dir=small_bundle(st, "device-forged", "def main():\n    pass\n"),
          env=dict(st.env, FIRMWARE_SIGNING_KEY=str(other)))
    m = lock.mark()
    rollout(st, "0.1.5")
    # fetched, then checked by the boot selector at the restart: refused, the running version untouched
    ev = lock.wait(lambda e: e.get("event") == "ota" and e.get("state") == "refused", 120, m, "refusal")
    assert ev["reason"] == "bad_signature"
    wait_until(lambda: fw_of(st)["firmware"]["state"] == "refused", 30, "the cloud to show the refusal")
    body = fw_of(st)
    assert "bad_signature" in body["firmware"]["last_error"] and body["firmware_version"] == "0.1.0"
    opens(lock)


def test_v2_is_fetched_resumed_after_a_power_cut_and_reported_in_the_hello(st, lock):
    build(st, "0.2.0")
    m = lock.mark()
    rollout(st, "0.2.0")
    # the download is under way: cut the power in the middle
    lock.wait(lambda e: e.get("event") == "ota" and e.get("state") == "downloading", 60, m, "download start")
    wait_until(lambda: (fw_of(st)["firmware"]["progress"] or 0) > 0.1, 120, "a part of the bundle fetched")
    cut = lock.mark()
    lock.send("!power-cycle")
    lock.wait(lambda e: e.get("event") == "ready", 60, cut, "boot after the power cut")
    resumed = lock.wait(lambda e: e.get("event") == "ota" and e.get("state") == "downloading", 90, cut, "resume")
    assert resumed["off"] > 0
    # codes open during the download (once the cloud's signed time has set the clock the cut stopped)
    lock.wait(lambda e: e.get("event") == "link" and e.get("ok") is True, 60, cut, "the signed time")
    opens(lock)
    reset = lock.wait(lambda e: e.get("event") == "reset" and e.get("reason") == "update", 300, cut, "the switch")
    ready = lock.wait(lambda e: e.get("event") == "ready", 60, after(lock, reset), "boot into 0.2.0")
    assert ready["version"] == "0.2.0"
    wait_until(lambda: fw_of(st)["firmware_version"] == "0.2.0", 60, "the hello to report 0.2.0")
    wait_until(lambda: fw_of(st)["firmware"]["state"] == "updated", 60, "the cloud to mark it updated")
    lock.wait(lambda e: e.get("event") == "ota" and e.get("state") == "confirmed", 60, cut, "confirmed")
    opens(lock)


def test_v3_that_raises_at_boot_is_rolled_back_and_the_rollout_halts(st, lock):
    build(st, "0.3.0", device_dir=small_bundle(st, "device-v3", 'raise RuntimeError("v3 is broken")\n'))
    m = lock.mark()
    rollout(st, "0.3.0")
    # fetched, installed, its trial boot crashes at import: 0.2.0 boots again and tells the rollback
    told = lock.wait(lambda e: e.get("event") == "ota" and e.get("state") == "rolled_back", 240, m, "the rollback")
    booted = [e for e in lock.events[m:after(lock, told)] if e.get("event") == "ready"]
    assert booted and booted[-1]["version"] == "0.2.0" and told["ver"] == "0.3.0", booted
    wait_until(lambda: fw_of(st)["firmware"]["rollbacks"] == 1, 60, "the cloud to count the rollback")
    body = fw_of(st)
    fw = body["firmware"]
    assert body["firmware_version"] == "0.2.0" and fw["state"] == "rolled_back" and fw["target"] == "0.3.0"
    assert "0.3.0" in fw["last_error"] and "crash_at_boot" in fw["last_error"]
    assert fw["rollout_halted"]  # 1 of 1 locks rolled back: above the 20 % limit
    opens(lock)
    again = flask(st, "firmware", "rollout", "--version", "0.3.0", "--lock", MAC)
    assert again.returncode != 0 and "halted" in again.stderr
