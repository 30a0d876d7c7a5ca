"""Ed25519 signature verification (RFC 8032, section 5.1.7) over MicroPython's big integers: the lock checks
a firmware release's signature with the release public key from its config. Verification only; the lock
never holds a private key. Public data only, so nothing here needs to run in constant time."""
from sha512 import sha512

_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493  # order of the base point
_D = (-121665 * pow(121666, _P - 2, _P)) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)  # a square root of -1 mod p
_D2 = (2 * _D) % _P


def _add(p, q):
    """Sum of two points in extended coordinates (X, Y, Z, T), x = X/Z, y = Y/Z, x*y = T/Z (a = -1)."""
    x1, y1, z1, t1 = p
    x2, y2, z2, t2 = q
    a = (y1 - x1) * (y2 - x2) % _P
    b = (y1 + x1) * (y2 + x2) % _P
    c = t1 * _D2 * t2 % _P
    d = 2 * z1 * z2 % _P
    e = b - a
    f = d - c
    g = d + c
    h = b + a
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _double(p):
    x1, y1, z1, _ = p
    a = x1 * x1 % _P
    b = y1 * y1 % _P
    c = 2 * z1 * z1 % _P
    h = a + b
    s = x1 + y1
    e = h - s * s % _P
    g = a - b
    f = c + g
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _decode(s):
    """32 bytes -> a point, or None when they do not encode one (RFC 8032, 5.1.3)."""
    if len(s) != 32:
        return None
    y = int.from_bytes(s, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    if y >= _P:
        return None
    u = (y * y - 1) % _P
    v = (_D * y * y + 1) % _P
    # candidate root x = u v^3 (u v^7)^((p-5)/8)
    v3 = v * v % _P * v % _P
    x = u * v3 % _P * pow(u * v3 % _P * v3 % _P * v % _P, (_P - 5) // 8, _P) % _P
    vx2 = v * x % _P * x % _P
    if vx2 != u:
        if vx2 != (_P - u) % _P:
            return None
        x = x * _SQRT_M1 % _P
    if x == 0 and sign:
        return None
    if x & 1 != sign:
        x = _P - x
    return (x, y, 1, x * y % _P)


def _encode(p) -> bytes:
    x, y, z, _ = p
    zi = pow(z, _P - 2, _P)
    x = x * zi % _P
    y = y * zi % _P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


_BY = 4 * pow(5, _P - 2, _P) % _P
_B = _decode(_BY.to_bytes(32, "little"))  # the base point: y = 4/5, x even


def verify_steps(public_key, message, signature):
    """The verification as a generator: yields None after every 16 bits of the scalar multiplication (so
    the main loop keeps opening the door meanwhile), then once more the result (True: valid).

    Rejects a non-canonical S and encodings that are not points; checks [S]B - [k]A == R (cofactorless, as
    libsodium does)."""
    if len(signature) != 64 or len(public_key) != 32:
        yield False
        return
    a = _decode(bytes(public_key))
    r = bytes(signature[:32])
    s = int.from_bytes(bytes(signature[32:]), "little")
    if a is None or s >= _L:
        yield False
        return
    k = int.from_bytes(sha512(r + bytes(public_key) + bytes(message)), "little") % _L
    neg_a = ((_P - a[0]) % _P, a[1], a[2], (_P - a[3]) % _P)
    both = _add(_B, neg_a)
    q = (0, 1, 1, 0)  # the neutral element
    for i in range(255, -1, -1):
        q = _double(q)
        bs = (s >> i) & 1
        bk = (k >> i) & 1
        if bs and bk:
            q = _add(q, both)
        elif bs:
            q = _add(q, _B)
        elif bk:
            q = _add(q, neg_a)
        if not i & 15:
            yield None
    yield _encode(q) == r


def verify(public_key, message, signature) -> bool:
    """True when signature (64 bytes) is a valid Ed25519 signature of message under public_key (32 bytes)."""
    result = False
    for result in verify_steps(public_key, message, signature):
        pass
    return bool(result)
