"""The bridge's counters (accepted messages by type, drops by reason): rate-limited logging and a JSON file.

What an uplink's application counts (`applied`: ok_<type>, events_new) is kept apart while a chunk of uplinks is
applied and moves to the counters when the transaction that applied it commits (`settle`); a rollback forgets
it (`discard`): the message is applied again later and counted then, once. Drops and the rest count at once."""
from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from typing import Optional

log = logging.getLogger("keydrop.bridge")

LOG_LINES_PER_MINUTE = 20


class Metrics:
    def __init__(self, path: Optional[str] = None):
        self.path = path
        self.counts: Counter = Counter()
        self.dirty = False
        self._pending: Optional[Counter] = None  # a chunk's counts waiting for its commit (None: no chunk)
        self._log_budget: dict[str, tuple[float, int]] = {}

    def add(self, name: str, k: int = 1) -> None:
        self.counts[name] += k
        self.dirty = True

    def applied(self, name: str, k: int = 1) -> None:
        """Count what an uplink's application did: at once outside a chunk, else when its transaction commits."""
        if self._pending is None:
            self.add(name, k)
        else:
            self._pending[name] += k

    def begin(self) -> None:
        self._pending = Counter()

    def settle(self) -> None:
        if self._pending:
            self.counts.update(self._pending)
            self._pending.clear()
            self.dirty = True

    def discard(self) -> None:
        if self._pending:
            self._pending.clear()

    def end(self) -> None:
        self.settle()
        self._pending = None

    def gauge(self, name: str, value: int) -> None:
        """A figure that is not a count (`held`: uplinks waiting for the database now)."""
        if self.counts.get(name, 0) != value:
            self.counts[name] = value
            self.dirty = True

    def drop(self, reason: str, lock_id: str = "?", level=logging.WARNING) -> None:
        """Count a dropped uplink; log it (lock id + reason only) within a per-reason budget, so a flood of
        garbage cannot flood the log (it is counted anyway)."""
        self.add(reason)
        self.counts["dropped"] += 1  # every drop, whatever the reason
        if not level:
            return
        now = time.monotonic()
        start, n = self._log_budget.get(reason, (now, 0))
        if now - start >= 60.0:
            if n > LOG_LINES_PER_MINUTE:
                log.warning("%d more uplinks dropped for %s in the last minute", n - LOG_LINES_PER_MINUTE, reason)
            start, n = now, 0
        self._log_budget[reason] = (start, n + 1)
        if n < LOG_LINES_PER_MINUTE:
            log.log(level, "dropped uplink from %s: %s", lock_id, reason)

    def write(self) -> None:
        """Atomically replace the metrics file (if configured) with the current counters."""
        self.dirty = False
        if not self.path:
            return
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(dict(self.counts), f)
        os.replace(tmp, self.path)

    def summary(self) -> str:
        return json.dumps(dict(self.counts), sort_keys=True)
