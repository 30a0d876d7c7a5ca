"""Keeps the managed mosquitto's password file / ACL in step with the registered locks (MQTT_BROKER_DIR)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import sqlalchemy as sa

from ..extensions import db

log = logging.getLogger("keydrop.bridge")


class BrokerCredentials:
    """Rewrites the broker's credentials when a lock was registered since the last sync, then SIGHUPs it."""

    def __init__(self, broker_dir: Optional[str], pidfile: Optional[str], username: Optional[str],
                 password: Optional[str]):
        self.broker_dir, self.pidfile = broker_dir, pidfile
        self.username, self.password = username, password
        self._sig = None

    @property
    def enabled(self) -> bool:
        return bool(self.broker_dir)

    def sync(self, force: bool = False) -> None:
        if not self.broker_dir:
            return
        from .. import broker
        from ..models import Lock
        sig = tuple(db.session.execute(sa.select(sa.func.count(Lock.id), sa.func.max(Lock.registered_at))).one())
        if sig == self._sig and not force:
            return
        users = {lid: broker.lock_mqtt_password(bytes(sec))
                 for lid, sec in db.session.execute(sa.select(Lock.id, Lock.secret))}
        users[self.username] = self.password
        broker.write_auth(Path(self.broker_dir), users, self.username)
        broker.hup(self.pidfile)
        self._sig = sig
        log.info("broker credentials written for %d locks", len(users) - 1)
