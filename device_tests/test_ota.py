"""Firmware updates on the MicroPython unix port (device_tests/mp/ota_cases.py), against releases made by
the cloud's own release code (cloud/firmware/release.py) and signatures made by PyNaCl."""
import hashlib
import json
import os
import random

import pytest
from nacl.signing import SigningKey

from cloud.firmware import release
from device_tests.mphelp import run_mp
from sim import mpbuild

L = 2**252 + 27742317777372353535851937790883648493


def _vectors(rnd: random.Random) -> list:
    out = []
    for i in range(24):
        sk = SigningKey(bytes(rnd.getrandbits(8) for _ in range(32)))
        pk = bytes(sk.verify_key)
        msg = bytes(rnd.getrandbits(8) for _ in range(rnd.choice([0, 1, 31, 64, 111, 112, 200])))
        sig = sk.sign(msg).signature
        out.append((pk.hex(), msg.hex(), sig.hex(), True))
        bad = bytearray(sig)
        bad[rnd.randrange(64)] ^= 1 << rnd.randrange(8)
        out.append((pk.hex(), msg.hex(), bytes(bad).hex(), False))
        out.append((pk.hex(), (msg + b"!").hex(), sig.hex(), False))
        other = bytes(SigningKey.generate().verify_key)
        out.append((other.hex(), msg.hex(), sig.hex(), False))
        if i < 4:  # S + L: the same point equation, but not canonical (RFC 8032 rejects it, so does libsodium)
            s = int.from_bytes(sig[32:], "little") + L
            if s < 2**256:
                out.append((pk.hex(), msg.hex(), (sig[:32] + s.to_bytes(32, "little")).hex(), False))
    return out


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    d = tmp_path_factory.mktemp("ota")
    rnd = random.Random(10)
    key = SigningKey(bytes(range(32)))
    files = release.compile_bundle(mpbuild.ROOT / "device", "0.2.0", "host")
    archive = release.pack(files)
    good = release.sign(key, "0.2.0", "host", archive)
    path = d / "good.kdb"
    path.write_bytes(archive)
    broken = bytearray(archive)
    broken[len(broken) // 2] ^= 0xFF
    (d / "broken.kdb").write_bytes(bytes(broken))
    other = SigningKey.generate()

    def rel(signed, archive_path, **over):
        r = {"ver": signed.version, "target": signed.target, "size": len(signed.data), "sha": signed.sha256,
             "sig": signed.signature, "flags": signed.flags, "archive": str(archive_path)}
        r.update(over)
        return r

    releases = {
        "good": rel(good, path),
        "bad_sig": rel(release.sign(other, "0.2.0", "host", archive), path),
        "bad_hash": rel(good, d / "broken.kdb"),
        "old": rel(release.sign(key, "0.0.9", "host", archive), path),
        "esp32": rel(release.sign(key, "0.2.0", "esp32", archive), path),
    }
    sha = [(m.hex(), hashlib.sha512(m).hexdigest()) for m in
           (bytes(rnd.getrandbits(8) for _ in range(n)) for n in (0, 1, 55, 111, 112, 127, 128, 129, 255, 1000))]
    (d / "vectors.txt").write_text("".join(f"{a} {b or '-'} {c} {int(v)}\n" for a, b, c, v in _vectors(rnd)))
    (d / "sha512.txt").write_text("".join(f"{a or '-'} {b}\n" for a, b in sha))
    fix = {"pubkey": bytes(key.verify_key).hex(), "vectors": str(d / "vectors.txt"), "sha512": str(d / "sha512.txt"),
           "releases": releases}
    p = d / "fixture.json"
    p.write_text(json.dumps(fix))
    return p


def test_ota_on_micropython(fixture, tmp_path):
    r = run_mp("ota_cases", tmp_path, {"OTA_FIXTURE": str(fixture), "OTA_CUTS": os.getenv("OTA_CUTS", "25")})
    assert r.returncode == 0, r.stdout + r.stderr
    assert " 0 failed" in r.stdout and "passed" in r.stdout
