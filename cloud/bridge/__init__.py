"""MQTT bridge between the locks and the cloud: `flask --app cloud bridge` (docs/protocol.md).

Where things are:
- envelope.py     the signed envelope, the `state` body, the per-lock key cache
- uplink.py       verification of one uplink (topic, size, signature, version, type, counter field)
- inbound.py      one uplink or a batch: verify, dispatch, count every outcome
- dispatch.py     uplink → domain: a table of handlers by message type (add new uplink types there)
- publisher.py    desired states → retained `state` downlinks
- session.py      the paho MQTT session (subscription, inbox, publish)
- credentials.py  reconciles the broker's lock logins with the database (cloud/broker_credentials.py)
- metrics.py      counters (accepted, dropped by reason), rate-limited drop logging, the metrics file
- runner.py       the Bridge that wires them, its main loop, configuration and the CLI entry point
"""
from ..models import BridgeLockState
from .envelope import MAX_DOWN, MAX_UP, Envelope, encode_state
from .runner import Bridge, from_config, main

__all__ = ["Bridge", "BridgeLockState", "Envelope", "MAX_DOWN", "MAX_UP", "encode_state", "from_config", "main"]
