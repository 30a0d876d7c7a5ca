"""A stand-in for device/session.py: what the link's policy sees of a session, with no thread and no network.
Tests hand it messages (linkmsg) to deliver and read what the policy sent."""


class _Counter:
    value = 0


class FakeSession:
    def __init__(self) -> None:
        self.connected = False
        self.last_error = None
        self.host = "broker-a"
        self.counts = {}
        self.counter = _Counter()
        self.sent = []        # uplink bodies the policy queued
        self.inbox = []       # messages for the next take()
        self.released = 0    # states the policy said it was through with (the receiving buffer is free)
        self.started = 0

    def start(self) -> None:
        self.started += 1

    def count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def send(self, obj: dict) -> bool:
        if not self.connected:
            return False
        self.sent.append(obj)
        return True

    def take(self):
        items, self.inbox = self.inbox, []
        return items or None

    def done(self) -> None:
        self.released += 1

    def rssi(self):
        return -61

    def deliver(self, *msgs) -> None:
        self.inbox.extend(msgs)

    def of_type(self, t: str) -> list:
        return [m for m in self.sent if m.get("t") == t]
