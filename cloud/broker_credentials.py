"""The locks' broker logins, kept in mosquitto's dynamic-security plugin (docs/operations.md, docs/security.md).

A lock logs in with username = its id, password = models.mqtt_password(secret), and only with client id
`kd-<id>` (the plugin refuses any other): a lock's login cannot end another client's session. What a lock may
publish and read is the broker's ACL (tools/mosquitto.py), the same two patterns for every lock.

- `grant(lock_ids)` right after a registration commits (the lock can connect as soon as it is provisioned);
- `revoke(lock_id)` when a lock is decommissioned (its login stops working; its live session is ended);
- `reconcile()` at bridge start and periodically: the database is the truth, the broker follows (creates the
  missing, deletes logins of locks that are gone). It heals a grant or revoke missed while the broker was down.

Configured by MQTT_ADMIN_USERNAME / MQTT_ADMIN_PASSWORD (+ MQTT_ADMIN_HOST, MQTT_ADMIN_PORT, MQTT_ADMIN_TLS,
MQTT_ADMIN_CA_FILE; default: the bridge's MQTT_HOST/PORT/TLS/CA). Without MQTT_ADMIN_PASSWORD the cloud does not
manage broker logins (an operator's broker authenticates locks its own way) and these functions do nothing.
"""
from __future__ import annotations

import logging
import os
import re
from typing import Iterable, Optional

import sqlalchemy as sa

from .config import is_on
from .dynsec import DynSec, DynSecError

__all__ = ["DynSecError", "grant", "lock_client_id", "reconcile", "revoke", "session"]
from .extensions import db
from .models import Lock, mqtt_password

log = logging.getLogger("keydrop.broker")

BATCH = 500  # commands per message: the plugin saves its whole file once per message
_LOCK_USERNAME = re.compile(r"^[0-9a-f]{12}$")  # canonical MACs: admin/bridge/other logins are never touched


def lock_client_id(lock_id: str) -> str:
    """The only MQTT client id a lock's login may use (the firmware's Link uses the same)."""
    return "kd-" + lock_id


def _setting(config, name: str, default=None):
    if config is None:
        from flask import current_app
        config = current_app.config
    return os.environ.get(name, config.get(name, default))


def session_configured(config=None) -> bool:
    return bool(_setting(config, "MQTT_ADMIN_PASSWORD"))


def session(config=None) -> Optional[DynSec]:
    """An admin session on the broker, or None when the cloud does not manage broker logins."""
    password = _setting(config, "MQTT_ADMIN_PASSWORD")
    if not password:
        return None
    tls = is_on(_setting(config, "MQTT_ADMIN_TLS", _setting(config, "MQTT_TLS", "0")))
    return DynSec(host=_setting(config, "MQTT_ADMIN_HOST", _setting(config, "MQTT_HOST", "127.0.0.1")),
                  port=int(_setting(config, "MQTT_ADMIN_PORT", _setting(config, "MQTT_PORT", 1883))),
                  username=_setting(config, "MQTT_ADMIN_USERNAME", "keydrop-admin"), password=password,
                  ca_file=_setting(config, "MQTT_ADMIN_CA_FILE", _setting(config, "MQTT_CA_FILE")) if tls else None)


def _create(lock_id: str, secret: bytes) -> dict:
    return {"command": "createClient", "username": lock_id, "password": mqtt_password(bytes(secret)),
            "clientid": lock_client_id(lock_id), "textname": "lock"}


def _apply(ds: DynSec, commands: list[dict], tolerate: str) -> int:
    """Run in batches; an error containing `tolerate` (already exists / not found) counts as done."""
    done = 0
    for i in range(0, len(commands), BATCH):
        for cmd, r in zip(commands[i:i + BATCH], ds.run(commands[i:i + BATCH])):
            err = r.get("error")
            if err and tolerate not in err.lower():
                raise DynSecError(f"{cmd['command']} {cmd['username']}: {err}")
            done += not err
    return done


def grant(lock_ids: Iterable[str], config=None) -> bool:
    """Give these registered locks their broker login. False (logged) if the broker could not be told: the
    next reconcile() does it."""
    ids = list(lock_ids)
    rows = db.session.execute(sa.select(Lock.id, Lock.secret).where(Lock.id.in_(ids))).all() if ids else []
    try:
        ds = session(config)
        if ds is None:
            return True
        with ds:
            _apply(ds, [_create(lid, sec) for lid, sec in rows], "already exists")
        return True
    except DynSecError as exc:
        log.warning("broker login of %s not created now (%s); the bridge's next reconcile creates it",
                    ", ".join(ids), exc)
        return False


def revoke(lock_id: str, config=None) -> bool:
    """Remove a decommissioned lock's broker login (and end its session). False (logged) if the broker could not
    be told: the next reconcile() removes it once the lock is gone from the database."""
    try:
        ds = session(config)
        if ds is None:
            return True
        with ds:
            _apply(ds, [{"command": "deleteClient", "username": lock_id}], "not found")
        return True
    except DynSecError as exc:
        log.warning("broker login of %s not removed now (%s); the bridge's next reconcile removes it", lock_id, exc)
        return False


def reconcile(config=None) -> Optional[dict]:
    """Make the broker's lock logins match the database; returns {"created": n, "deleted": n, "locks": n}
    (None when the cloud does not manage broker logins). Raises DynSecError if the broker cannot be told."""
    ds = session(config)
    if ds is None:
        return None
    with ds:
        present = {u for u in ds.list_clients() if _LOCK_USERNAME.match(u)}
        known = {}
        # a decommissioned lock keeps its row (history) under an archive id, but no login
        for lid, sec in db.session.execute(sa.select(Lock.id, Lock.secret).where(Lock.status != "retired")):
            known[lid] = sec
        db.session.rollback()  # end the read transaction: the bridge's session lives on
        created = _apply(ds, [_create(lid, known[lid]) for lid in sorted(known.keys() - present)], "already exists")
        deleted = _apply(ds, [{"command": "deleteClient", "username": u} for u in sorted(present - known.keys())],
                         "not found")
    if created or deleted:
        log.info("broker logins reconciled: %d created, %d deleted (%d locks)", created, deleted, len(known))
    return {"created": created, "deleted": deleted, "locks": len(known)}
