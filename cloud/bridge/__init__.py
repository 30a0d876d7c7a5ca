"""MQTT bridge between the locks and the cloud: `flask --app cloud bridge` (docs/protocol.md).

Where things are:
- envelope.py     the signed envelope, the `state` body, the per-lock key cache
- uplink.py       verification of one uplink (topic, size, signature, version, type, counter field)
- inbound.py      one uplink or a batch: verify, dispatch, count every outcome; what the database did not take
- bulk.py         a chunk's hellos and acks applied in a few statements for the whole chunk
- dispatch.py     uplink → domain: a table of handlers by message type (add new uplink types there)
- firmware.py     the firmware-update uplinks and the announcements of due releases
- publisher.py    desired states → retained `state` downlinks
- wakeup.py       PostgreSQL LISTEN on the change queue's NOTIFY (wakes the main loop)
- session.py      the paho MQTT session (subscription, inbox, publish)
- mqttclient.py   paho's client reading in blocks and acknowledging a chunk in one write (the session's)
- credentials.py  reconciles the broker's lock logins with the database (cloud/broker_credentials.py)
- metrics.py      counters (accepted, dropped by reason), rate-limited drop logging, the metrics file
- runner.py       the Bridge that wires them and holds what handlers reach for (replies, last contact),
                  its configuration and the CLI entry point
- loop.py         the main loop: uplinks in chunks, the held ones again with backoff, desired states when due,
                  the periodic jobs
"""
from ..models import BridgeLockState
from .envelope import MAX_DOWN, MAX_UP, Envelope, encode_state
from .runner import Bridge, from_config, main

__all__ = ["Bridge", "BridgeLockState", "Envelope", "MAX_DOWN", "MAX_UP", "encode_state", "from_config", "main"]
