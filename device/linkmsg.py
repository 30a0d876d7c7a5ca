"""The messages the link's worker thread (session.py, downlink.py) hands to the main loop (link.py): one small
class per kind, so both sides name what they exchange instead of indexing tuples."""


class Up:
    """The session is connected; `will` is the counter value sealed into its last will."""

    def __init__(self, will: int) -> None:
        self.will = will


class Down:
    """The session ended (`reason`: the link error) and is being retried."""

    def __init__(self, reason) -> None:
        self.reason = reason


class Refused:
    """A downlink message was dropped; `reason` names why (a key of Link.counts)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


class Time:
    """Signed server time answering the hello whose nonce it carries."""

    def __init__(self, epoch: int, nonce: str) -> None:
        self.epoch = epoch
        self.nonce = nonce


class State:
    """A verified desired state. `buf`: the index of the downlink's staging buffer holding the code records
    (-1: none); the main loop says with Session.done() whether the installed code set adopted it."""

    def __init__(self, rev: int, codes, backup, buf: int) -> None:
        self.rev = rev
        self.codes = codes
        self.backup = backup
        self.buf = buf
        self.tries = 0  # installs that ran out of memory (the main loop tries again a little later)


class LogAck:
    """The cloud stored the access log up to `seq`."""

    def __init__(self, seq: int) -> None:
        self.seq = seq
