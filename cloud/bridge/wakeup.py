"""Wakes the bridge when the change queue gets rows: PostgreSQL LISTEN on the domain's NOTIFY (SQLite: none, the
main loop (loop.py) polls the queue's head instead)."""
from __future__ import annotations

import logging
import threading

from ..statequeue import CHANNEL

log = logging.getLogger("keydrop.bridge")


class Listener:
    """A thread holding one autocommit connection in LISTEN; each notification calls `wake()` (the bridge sets a
    flag it checks between chunks of uplinks, so a change is not queued behind a backlog of them). After a lost
    connection it reconnects and wakes the bridge once (a NOTIFY sent while it was away is gone; the queue rows
    are not)."""

    def __init__(self, url, wake):
        self.conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self.wake = wake
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bridge-listen", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        import psycopg
        failing = False  # logged once per outage, not once a second
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    if failing:
                        log.info("LISTEN %s: connected again", CHANNEL)
                        failing = False
                    self.wake()
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=1.0):
                            self.wake()
            except Exception as exc:
                if not failing:
                    log.warning("LISTEN %s: %s; reconnecting every second", CHANNEL, exc)
                failing = True
                self._stop.wait(1.0)
