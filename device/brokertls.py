"""TLS towards the broker, for the link's session: the CA read at boot, the clock set before a handshake, one
client context that requires the broker's chain to that CA, for its name (docs/security.md)."""


def _der(data):
    """The first certificate of a PEM file -> DER (mbedTLS wants PEM NUL-terminated; DER avoids the question)."""
    if not data.startswith(b"-----BEGIN"):
        return data
    from binascii import a2b_base64
    end = data.find(b"-----END")
    body = b"".join(ln.strip() for ln in data[:end].split(b"\n") if ln.strip() and not ln.startswith(b"-----"))
    return a2b_base64(body)


class BrokerTls:
    def __init__(self, m: dict, board, trusted_now, ntp: str) -> None:
        self.board = board
        self.ntp = ntp
        self._trusted_now = trusted_now  # the lock's trusted time (RTC, cloud), None when it has none
        # the CA is read and decoded at boot: once sessions have come and gone the heap is too fragmented
        # for the ~1 KB of an RSA certificate; a lock configured for TLS without a CA never connects
        self._ca = None
        self._ctx = None  # type: object
        self._refusal = None
        try:
            with open(m["ca"], "rb") as f:
                self._ca = _der(f.read())
        except (KeyError, TypeError, OSError, ValueError):
            self._refusal = "tls: no CA certificate (set mqtt.ca to the broker CA's file)"

    def context(self):
        """The TLS context, built once: the broker must present a chain to the configured CA, for its name.

        mbedTLS checks certificate dates against the system clock, which reads 2000-01-01 after a power-up: it
        is set first (the lock's trusted time, from its RTC or the cloud, else SNTP) or TLS does not start.
        SNTP is good enough for certificate dates; it never becomes the lock's trusted time for codes."""
        if self._refusal is not None:
            raise ValueError(self._refusal)
        b = self.board
        if not b.clock_ok():
            t = self._trusted_now()
            if t is not None:
                b.set_clock(t)
            else:
                try:
                    b.sntp(self.ntp)
                except OSError:
                    pass
            if not b.clock_ok():
                raise OSError("clock: not set (no SNTP answer from %s, no RTC): no TLS before it is" % self.ntp)
        if self._ctx is None:
            import ssl
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.verify_mode = ssl.CERT_REQUIRED  # MicroPython's client context defaults to CERT_NONE
            ctx.load_verify_locations(cadata=self._ca)
            self._ctx = ctx
            self._ca = None  # parsed into the context: the bytes can go
        return self._ctx
