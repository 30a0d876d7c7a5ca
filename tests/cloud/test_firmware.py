"""Firmware releases and rollouts in the cloud: the release key file, signed builds, rollouts by lock, agency
and share, the bridge's chunk answers and update reports, the automatic halt, the public key in provisioning."""
import base64
import hashlib
import os
import struct

import pytest
from nacl.signing import VerifyKey

from cloud.firmware import release


@pytest.fixture
def signing_key(tmp_path):
    path = tmp_path / "release.key"
    pub = release.write_key(path)
    return path, pub


def _cli(app, *args):
    return app.test_cli_runner().invoke(args=list(args))


def test_keygen_writes_a_private_file_and_never_overwrites(app, tmp_path):
    out = tmp_path / "k.key"
    r = _cli(app, "firmware", "keygen", "--out", str(out))
    assert r.exit_code == 0, r.output
    assert os.stat(out).st_mode & 0o777 == 0o600
    pub = [ln.split()[-1] for ln in r.output.splitlines() if ln.startswith("public key")][0]
    assert release.public_key_hex(out) == pub
    again = _cli(app, "firmware", "keygen", "--out", str(out))
    assert again.exit_code != 0 and "never overwritten" in again.output
    assert release.public_key_hex(out) == pub


def test_build_signs_a_bundle_the_lock_can_check(app, signing_key, tmp_path):
    key_path, pub = signing_key
    app.config["FIRMWARE_SIGNING_KEY"] = str(key_path)
    r = _cli(app, "firmware", "build", "--version", "0.2.0", "--target", "host")
    assert r.exit_code == 0, r.output
    from cloud.extensions import db
    from cloud.models import FirmwareRelease
    with app.app_context():
        rel = db.session.query(FirmwareRelease).one()
        data, sha, sig = rel.data, rel.sha256, rel.signature
    assert hashlib.sha256(data).hexdigest() == sha
    VerifyKey(bytes.fromhex(pub)).verify(release.manifest("0.2.0", "host", len(data), bytes.fromhex(sha), 0),
                                         bytes.fromhex(sig))
    # the archive holds the compiled firmware, its version.py saying 0.2.0
    assert data[:4] == b"KDB1"
    names, o = {}, 6
    for _ in range(struct.unpack(">H", data[4:6])[0]):
        n = data[o]
        name = data[o + 1:o + 1 + n].decode()
        size = struct.unpack(">I", data[o + 1 + n:o + 5 + n])[0]
        body = data[o + 37 + n:o + 37 + n + size]
        assert hashlib.sha256(body).digest() == data[o + 5 + n:o + 37 + n]
        names[name] = body
        o += 37 + n + size
    assert o == len(data)
    assert "main.py" in names and "lock.mpy" in names and "ota.mpy" in names and "boot.py" in names
    assert b"0.2.0" in names["version.mpy"]
    again = _cli(app, "firmware", "build", "--version", "0.2.0", "--target", "host")
    assert again.exit_code != 0 and "exists already" in again.output


def test_build_without_a_key_says_how_to_make_one(app):
    app.config["FIRMWARE_SIGNING_KEY"] = None
    r = _cli(app, "firmware", "build", "--version", "0.2.0", "--target", "host")
    assert r.exit_code != 0 and "firmware keygen" in r.output
    bad = _cli(app, "firmware", "build", "--version", "two", "--target", "host")
    assert bad.exit_code != 0 and "whole numbers" in bad.output


def _release(app, key_path, version="0.2.0"):
    from cloud.firmware.rollout import save_release
    with app.app_context():
        archive = release.pack({"main.py": b"print('hi')\n", "version.mpy": version.encode() * 700})
        rel = save_release(release.sign(release.load_key(key_path), version, "host", archive))
        return rel.id, len(archive)


def test_rollout_chunks_reports_and_halt(app, signing_key, make_agency, make_lock):
    key_path, _ = signing_key
    a, b = make_agency(), make_agency()
    locks = [make_lock(a, firmware="0.1.0") for _ in range(4)]
    other = make_lock(b, firmware="0.1.0")
    _, size = _release(app, key_path)
    r = _cli(app, "firmware", "rollout", "--version", "0.2.0", "--agency", str(a.id), "--halt-share", "0.3")
    assert r.exit_code == 0, r.output
    assert all(lid in r.output for lid in locks) and other not in r.output
    from cloud.firmware import rollout
    from cloud.models import Lock
    from cloud.extensions import db
    with app.app_context():
        ann = rollout.on_hello(locks[0], "0.1.0")
        assert ann["t"] == "fw" and ann["ver"] == "0.2.0" and ann["size"] == size
        assert rollout.on_hello(other, "0.1.0") is None
        # chunks only of the targeted release, at most 2 KB, and only to a targeted lock
        c = rollout.chunk(locks[0], "0.2.0", 2048, 2048)
        assert c["off"] == 2048 and len(base64.b64decode(c["d"])) == min(2048, size - 2048)
        assert rollout.chunk(locks[0], "0.2.0", 0, 4096) is None
        assert rollout.chunk(other, "0.2.0", 0, 2048) is None
        assert rollout.chunk(locks[0], "0.1.0", 0, 2048) is None
        j = rollout.lock_json(locks[0], "0.1.0")["firmware"]
        assert j["state"] == "downloading" and j["target"] == "0.2.0" and 0 < j["progress"] < 1
        # one lock updates, one refuses, then two roll back: 2 of 4 > 30 % halts the rollout
        rollout.on_hello(locks[1], "0.2.0")
        assert rollout.lock_json(locks[1], "0.2.0")["firmware"]["state"] == "updated"
        rollout.on_report(locks[0], {"state": "rolled_back", "ver": "0.2.0", "reason": "crash_at_boot",
                                     "rollbacks": 1})
        rollout.on_report(locks[0], {"state": "rolled_back", "ver": "0.2.0", "reason": "crash_at_boot",
                                     "rollbacks": 1})  # repeated on every connection: counted once
        j = rollout.lock_json(locks[0], "0.1.0")["firmware"]
        assert j["rollbacks"] == 1 and j["state"] == "rolled_back" and "crash_at_boot" in j["last_error"]
        assert not j["rollout_halted"]
        rollout.on_report(locks[2], {"state": "rolled_back", "ver": "0.2.0", "reason": "no_ack", "rollbacks": 1})
        j = rollout.lock_json(locks[3], "0.1.0")["firmware"]
        assert j["rollout_halted"] and j["state"] == "halted"
        assert rollout.on_hello(locks[3], "0.1.0") is None  # no more announcements
        assert db.session.get(Lock, locks[0]) is not None
    again = _cli(app, "firmware", "rollout", "--version", "0.2.0", "--lock", locks[3])
    assert again.exit_code != 0 and "halted" in again.output


def test_rollout_by_share_is_stable_and_by_lock(app, signing_key, make_agency, make_lock):
    key_path, _ = signing_key
    a = make_agency()
    locks = [make_lock(a, firmware="0.1.0") for _ in range(20)]
    _release(app, key_path)
    r10 = _cli(app, "firmware", "rollout", "--version", "0.2.0", "--percent", "30")
    assert r10.exit_code == 0, r10.output
    first = {lid for lid in locks if lid in r10.output}
    r60 = _cli(app, "firmware", "rollout", "--version", "0.2.0", "--percent", "80")
    assert first <= {lid for lid in locks if lid in r60.output}
    one = _cli(app, "firmware", "rollout", "--version", "0.2.0", "--lock", locks[0].upper())
    assert one.exit_code == 0 and locks[0] in one.output
    none = _cli(app, "firmware", "rollout", "--version", "0.2.0")
    assert none.exit_code != 0 and "--lock" in none.output
    missing = _cli(app, "firmware", "rollout", "--version", "9.9.9", "--lock", locks[0])
    assert missing.exit_code != 0 and "no release" in missing.output


def test_provisioning_gives_the_release_public_key(app, client, signing_key, make_agency, make_lock, api_token):
    key_path, pub = signing_key
    a = make_agency()
    lid = make_lock(a)
    tok = api_token(a)
    app.config["FIRMWARE_SIGNING_KEY"] = str(key_path)
    body = client.post(f"/api/v1/locks/{lid}/provision", headers={"Authorization": f"Bearer {tok}"}).get_json()
    assert body["fw_pubkey"] == pub
    assert str(key_path) not in str(body)


def test_lock_page_shows_the_update_and_the_owner_can_start_one(app, client, signing_key, make_agency, make_lock,
                                                                 login):
    key_path, _ = signing_key
    a = make_agency()
    lid = make_lock(a, firmware="0.1.0")
    _release(app, key_path, "0.2.0")
    _release(app, key_path, "0.0.5")  # older: never offered
    login(client, a)
    page = client.get(f"/locks/{lid}").get_data(as_text=True)
    assert "Firmware update" in page and ">0.2.0<" in page and ">0.0.5<" not in page
    from cloud.models import FirmwareRelease
    from cloud.extensions import db
    with app.app_context():
        rid = db.session.query(FirmwareRelease).filter_by(version="0.2.0").one().id
    r = client.post(f"/locks/{lid}/firmware", data={"release": str(rid)})
    assert r.status_code == 302
    page = client.get(f"/locks/{lid}").get_data(as_text=True)
    assert "update to 0.2.0: announced" in page
    # another agency's lock cannot be updated from this account
    b = make_agency()
    other = make_lock(b, firmware="0.1.0")
    assert client.post(f"/locks/{other}/firmware", data={"release": str(rid)}).status_code == 404


def test_the_api_lock_json_carries_the_firmware_state(app, client, signing_key, make_agency, make_lock, api_token):
    key_path, _ = signing_key
    a = make_agency()
    lid = make_lock(a, firmware="0.1.0")
    _release(app, key_path, "0.2.0")
    assert _cli(app, "firmware", "rollout", "--version", "0.2.0", "--lock", lid).exit_code == 0
    tok = api_token(a)
    body = client.get(f"/api/v1/locks/{lid}", headers={"Authorization": f"Bearer {tok}"}).get_json()
    assert body["firmware_version"] == "0.1.0"
    assert body["firmware"] == {"target": "0.2.0", "state": "announced", "progress": 0.0, "last_error": None,
                                "rollbacks": 0, "rollout_halted": False}


def test_the_bridge_announces_again_while_a_lock_stays_silent(app, signing_key, make_agency, make_lock):
    """An announcement lost (with a session, or refused by a lock short of memory) is sent again every
    REANNOUNCE_S while the online lock has not answered; once it fetches, no more."""
    from cloud.bridge import firmware as bridge_fw
    from cloud.extensions import db
    from cloud.firmware import rollout
    from cloud.models import BridgeLockState

    key_path, _ = signing_key
    a = make_agency()
    lid = make_lock(a, firmware="0.1.0")
    _release(app, key_path)
    assert _cli(app, "firmware", "rollout", "--version", "0.2.0", "--lock", lid).exit_code == 0

    class Bridge:
        def __init__(self):
            self.fw_announced, self.sent = {}, []
            self.metrics = type("M", (), {"add": lambda self, *a: None})()

        def reply(self, lock_id, body):
            self.sent.append((lock_id, body["t"], body["ver"]))

    br = Bridge()
    with app.app_context():
        db.session.add(BridgeLockState(lock_id=lid, last_counter=0, seen_window=0, online=True))
        db.session.commit()
        assert bridge_fw.announce_due(br, now=100.0) == 1
        assert bridge_fw.announce_due(br, now=100.0 + bridge_fw.REANNOUNCE_S - 1) == 0  # not a flood
        assert bridge_fw.announce_due(br, now=100.0 + bridge_fw.REANNOUNCE_S) == 1  # nothing heard: again
        assert br.sent == [(lid, "fw", "0.2.0")] * 2
        rollout.chunk(lid, "0.2.0", 0, 256)  # the lock fetches: it heard
        assert bridge_fw.announce_due(br, now=1000.0) == 0
