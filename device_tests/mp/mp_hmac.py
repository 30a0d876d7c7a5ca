"""HMAC-SHA256 and constant-time compare; vectors from CPython's hmac come in through argv/env."""
import os

from hmac256 import Hmac256, equal, hmac_sha256


def test_rfc4231_case2():
    d = hmac_sha256(b"Jefe", b"what do ya want for nothing?")
    assert d.hex() == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843", d.hex()


def test_long_key_is_hashed():
    k = b"\xaa" * 131
    d = hmac_sha256(k, b"Test Using Larger Than Block-Size Key - Hash Key First")
    assert d.hex() == "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54", d.hex()


def test_cpython_vectors():
    # lines "keyhex msghex digesthex" written by the pytest driver
    path = os.getenv("HMAC_VECTORS")
    assert path
    n = 0
    with open(path) as f:
        for line in f:
            k, m, d = line.split()
            assert Hmac256(bytes.fromhex(k)).digest(bytes.fromhex(m)).hex() == d
            n += 1
    assert n >= 100


def test_equal():
    assert equal(b"abc", b"abc")
    assert not equal(b"abc", b"abd")
    assert not equal(b"abc", b"ab")
    assert equal(bytearray(b"\x00" * 32), bytes(32))
