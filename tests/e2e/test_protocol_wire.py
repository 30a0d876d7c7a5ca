"""The envelope both sides speak (device/protocol.py on MicroPython, cloud/bridge/ on CPython) agree on the
exact bytes; a full 200-code desired state fits the downlink limit and parses on the unix port under the
firmware's heap cap; tampering, oversize and malformed messages are refused with their reason."""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess

import pytest


pytestmark = pytest.mark.e2e


def _run_device(tmp_path, source: str, heap: str = "128k") -> str:
    from sim import mpbuild
    mpbuild.build()
    env = dict(os.environ, MICROPYPATH=".frozen:" + str(mpbuild.BUILD / "device"))
    r = subprocess.run([mpbuild.tool("micropython"), "-X", f"heapsize={heap}", "-c", source], env=env,
                       cwd=str(tmp_path), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def _state(secret: bytes, n: int) -> dict:
    now = 1_790_000_000
    codes = [{"id": 100000 + i, "digest": hmac.new(secret, b"%04d" % i, hashlib.sha256).digest(),
              "from": now + i, "until": now + 86400 * 30 + i} for i in range(n)]
    return {"revision": 4242, "codes": codes, "backup_digest": hmac.new(secret, b"7391", hashlib.sha256).digest()}


def test_200_codes_fit_and_parse_under_the_heap_cap(tmp_path):
    from cloud.bridge import MAX_DOWN, Envelope, encode_state
    secret = os.urandom(32)
    lock_id = "24a16054ab3c"
    topic = f"lock/{lock_id}/down"
    env = Envelope(secret)
    good = env.seal(topic, encode_state(_state(secret, 200)))
    assert len(good) <= MAX_DOWN, len(good)
    bad = bytearray(good)
    bad[200] ^= 1
    (tmp_path / "good.bin").write_bytes(good)
    (tmp_path / "bad.bin").write_bytes(bytes(bad))
    (tmp_path / "big.bin").write_bytes(good + b" " * (MAX_DOWN - len(good) + 1))
    (tmp_path / "json.bin").write_bytes(env.seal(topic, {"v": 1, "t": "state"}))
    (tmp_path / "v2.bin").write_bytes(env.seal(topic, {"v": 2, "t": "state"}))
    (tmp_path / "up.bin").write_bytes(env.seal(f"lock/{lock_id}/up", encode_state(_state(secret, 1))))
    out = _run_device(tmp_path, f"""
import gc, protocol as P
from binascii import unhexlify
env = P.Envelope(unhexlify({secret.hex()!r}), {lock_id!r})
gc.collect()
free0 = gc.mem_free()
data = open('good.bin', 'rb').read()
data = env.open(env.down, data)
rev, codes, backup = P.parse_state(data)
data = None
gc.collect()
c = list(codes)
print(rev, len(codes), c[0][0], len(c[0][1]), c[-1][3], len(backup))
c = None
print('heap', free0 - gc.mem_free())
data = codes = None
for name in ('bad', 'big', 'json', 'v2', 'up'):
    gc.collect()
    try:
        P.parse_state(env.open(env.down, open(name + '.bin', 'rb').read()))
        print(name, 'accepted')
    except P.ProtocolError as e:
        print(name, e.args[0])
""")
    lines = out.splitlines()
    print(lines[1], "bytes of heap to verify + parse", len(good), "bytes")
    assert lines[0] == f"4242 200 100000 32 {1_790_000_000 + 86400 * 30 + 199} 32"
    assert int(lines[1].split()[1]) < 100_000
    assert lines[2:] == ["bad bad_signature", "big oversize", "json malformed", "v2 bad_version",
                         "up bad_signature"]


def test_lock_signature_verifies_in_the_bridge(tmp_path):
    from cloud.bridge import Envelope
    secret = os.urandom(32)
    out = _run_device(tmp_path, f"""
import protocol as P
from binascii import unhexlify
env = P.Envelope(unhexlify({secret.hex()!r}), '24a16054ab3c')
sig, body = env.seal_up({{"v": 1, "t": "ack", "n": 7, "rev": 3}})  # the two parts MQTTClient.publish writes
print((sig + body).decode())
""")
    payload = out.strip().encode()
    msg = Envelope(secret).open("lock/24a16054ab3c/up", payload)
    assert msg == {"v": 1, "t": "ack", "n": 7, "rev": 3}
    with pytest.raises(ValueError, match="bad_signature"):
        Envelope(secret).open("lock/24a16054ab3d/up", payload)   # moved to another lock's topic


def test_full_firmware_installs_200_codes_from_the_wire_under_128k(tmp_path):
    """The real Lock on the simulated board, with the link, at the heap cap: a 200-code state goes through
    the link's receive path (verify + parse, as the worker thread does) and the main loop's install."""
    from cloud.bridge import Envelope, encode_state
    from sim import mpbuild
    secret = os.urandom(32)
    lock_id = "24a16054ab3c"
    topic = f"lock/{lock_id}/down"
    state = _state(secret, 200)
    (tmp_path / "wire.bin").write_bytes(Envelope(secret).seal(topic, encode_state(state)))
    (tmp_path / "config.json").write_text(json.dumps({
        "lock_id": lock_id, "secret": secret.hex(),
        "mqtt": {"host": "127.0.0.1", "port": 1, "username": lock_id, "password": "x"}}))
    mpbuild.build()
    env = dict(os.environ, MICROPYPATH=mpbuild.micropypath())
    env.pop("SIMLOCK_DIR", None)
    src = f"""
import gc, config, board, link
from lock import Lock
cfg = config.load()
b = board.Board(cfg)
import main
lk = Lock(b, cfg, *main.drivers(b, cfg))
L = link.start(lk, cfg, b)
S = L.session
S.start = lambda: None     # no network thread: we feed the receive path directly
gc.collect()
print('free before', gc.mem_free())
f = open('wire.bin', 'rb')
n = f.readinto(S.downlink.rx)  # the payload arrives in the link's boot-time buffer, as the client does it
f.close()
import _thread, time
# the worker thread's callback hands the state over, then waits until the main loop has installed it
_thread.start_new_thread(S.on_message, ({topic!r}.encode(), memoryview(S.downlink.rx)[:n]))
t0 = time.ticks_ms()
while lk.revision != 4242 and time.ticks_diff(time.ticks_ms(), t0) < 20000:
    L.poll(b.ticks_ms())
    time.sleep_ms(5)
gc.collect()
print(L.status()['counts'])
print('installed', lk.revision, lk.codes.count, 'free after', gc.mem_free())
"""
    r = subprocess.run(mpbuild.command("128k") + ["-c", src], env=env, cwd=str(tmp_path), capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    print(r.stdout)
    assert "installed 4242 200" in r.stdout
