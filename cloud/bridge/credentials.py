"""Runs the broker-login reconcile (cloud/broker_credentials.py) from the bridge: at start and every few minutes."""
from __future__ import annotations

import logging
import time

from ..extensions import db

log = logging.getLogger("keydrop.bridge")

RETRY_S = 10.0  # after a failed reconcile (broker unreachable or slow), try again this soon


class BrokerCredentials:
    """Heals what a registration or decommission could not tell the broker at the time (it was down)."""

    def __init__(self, config, every: float = 300.0):
        self.config, self.every = config, every
        self._next = 0.0

    @property
    def enabled(self) -> bool:
        from ..broker_credentials import session_configured
        return session_configured(self.config)

    def sync(self, force: bool = False) -> None:
        if not self.enabled or (not force and time.monotonic() < self._next):
            return
        from ..broker_credentials import DynSecError, reconcile
        try:
            reconcile(self.config)
            self._next = time.monotonic() + self.every
        except DynSecError as exc:
            db.session.rollback()
            log.warning("broker logins not reconciled (%s); retrying in %.0f s", exc, RETRY_S)
            self._next = time.monotonic() + RETRY_S
