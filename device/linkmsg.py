"""The messages the link's worker thread (session.py, downlink.py) hands to the main loop (link.py), each its
own type with named fields, so both sides name what they exchange instead of indexing tuples. Named tuples
where the fields never change: a class costs twice their heap."""
from collections import namedtuple

# The session is connected; `will`: the counter value sealed into its last will.
Up = namedtuple("Up", ("will",))
# The session ended (`reason`: the link error) and is being retried.
Down = namedtuple("Down", ("reason",))
# A downlink message was dropped; `reason` names why (a key of the session's counts).
Refused = namedtuple("Refused", ("reason",))
# Signed server time answering the hello whose nonce it carries.
Time = namedtuple("Time", ("epoch", "nonce"))
# The cloud stored the access log up to `seq`.
LogAck = namedtuple("LogAck", ("seq",))


class State:
    """A verified desired state, its code records still in the downlink's receiving buffer; the main loop
    tells Session.done() when it is through with them."""

    def __init__(self, rev: int, codes, backup) -> None:
        self.rev = rev
        self.codes = codes
        self.backup = backup
        self.tries = 0  # installs that ran out of memory (the main loop tries again a little later)
