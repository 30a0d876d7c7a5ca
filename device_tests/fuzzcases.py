"""Hypothesis strategies for downlink payloads (random, signed-but-wrong, mutated valid messages) and the runner
that hands a batch of them to device_tests/mp/fuzz_downlink.py on the unix port."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import struct
from pathlib import Path

from hypothesis import strategies as st

from device_tests.mphelp import run_mp_script

SECRET = bytes(range(32))  # device_tests/mp/mputil.py's lock secret
TOPIC = b"lock/24a16054ab3c/down"
MAX_DOWN = 12288


def sign(body: bytes, secret: bytes = SECRET, topic: bytes = TOPIC) -> bytes:
    return hmac.new(secret, b"KD1\x00" + topic + b"\x00" + body, hashlib.sha256).hexdigest().encode() + body


def _records(n: int, now: int = 1_790_000_000) -> bytes:
    return b"".join(hmac.new(SECRET, b"%04d" % i, hashlib.sha256).digest() + struct.pack(">III", 100 + i, now, now + 86400)
                    for i in range(n))


def state_body(rev: int, n: int, backup: bool = True) -> dict:
    body = {"v": 1, "t": "state", "rev": rev, "n": n, "c": base64.b64encode(_records(n)).decode()}
    if backup:
        body["backup"] = base64.b64encode(hmac.new(SECRET, b"7391", hashlib.sha256).digest()).decode()
    return body


def dump(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=6) | st.dictionaries(st.text(max_size=8), kids, max_size=6),
    max_leaves=30)

valid = st.one_of(
    st.builds(lambda r, n, b: dump(state_body(r, n, b)), st.integers(0, 2**32 - 1), st.integers(0, 200),
              st.booleans()),
    st.builds(lambda now, nonce: dump({"v": 1, "t": "time", "now": now, "nonce": nonce}),
              st.integers(0, 2**33), st.text(max_size=24)),
    st.builds(lambda seq: dump({"v": 1, "t": "logack", "seq": seq}), st.integers(0, 2**40)),
)


@st.composite
def mutated(draw):
    """A valid body, then changed: a field set to any JSON value, bytes flipped, cut short, or padded."""
    body = bytearray(draw(valid))
    how = draw(st.sampled_from(["field", "flip", "cut", "pad", "type"]))
    if how == "field":
        obj = json.loads(body)
        obj[draw(st.sampled_from(sorted(obj) + ["extra"]))] = draw(json_values)
        body = bytearray(dump(obj))
    elif how == "flip":
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(body) - 1))
            body[i] = draw(st.integers(0, 255))
    elif how == "cut":
        body = body[: draw(st.integers(0, len(body)))]
    elif how == "pad":
        body += draw(st.binary(max_size=64))
    else:
        obj = json.loads(body)
        obj["t"] = draw(st.text(max_size=10))
        body = bytearray(dump(obj))
    return bytes(body)


payloads = st.one_of(
    st.binary(max_size=300),                                            # noise, unsigned
    st.binary(min_size=64, max_size=200).map(lambda b: (b * 70)[:MAX_DOWN]),           # big noise
    valid.map(sign),                                                     # well formed
    mutated().map(sign),                                                 # signed, then wrong inside
    mutated().map(lambda b: sign(b)[:64] + b[::-1]),                     # signature of another body
    json_values.map(lambda v: sign(dump(v))),                            # signed arbitrary JSON
    valid.map(lambda b: sign(b, secret=b"\x01" * 32)),                   # another lock's secret
)


def run_batch(cases: list[bytes], tmp: Path) -> dict:
    f = tmp / "cases.bin"
    f.write_bytes(b"".join(struct.pack(">I", len(c)) + c for c in cases))
    r = run_mp_script("fuzz_downlink.py", tmp, env_extra={"FUZZ_CASES": str(f)})
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])
