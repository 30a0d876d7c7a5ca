"""The bridge's MQTT session (paho): connect, subscribe to the uplinks, queue what arrives, publish downlinks.

Uplinks are acknowledged by hand, only after the database transaction that applied them committed (`ack`).
With a worker slot the session is persistent (clean_session=False, a stable client id): a worker killed
mid-batch leaves its unacknowledged messages with the broker, which sends them again when the worker restarted
in that slot reconnects. Several
workers share the uplinks through the shared subscription `$share/bridge/lock/+/up`.
"""
from __future__ import annotations

import logging
import queue
import ssl
import threading
from typing import Optional

from .envelope import MAX_DOWN
from .metrics import Metrics

log = logging.getLogger("keydrop.bridge")

UPLINKS = "lock/+/up"
SHARED_UPLINKS = "$share/bridge/lock/+/up"


class Session:
    """paho's network thread only queues incoming messages in `inbox`; the bridge's main thread does the rest."""

    def __init__(self, metrics: Metrics, *, host: str, port: int, username: Optional[str], password: Optional[str],
                 client_id: str, tls_ca: Optional[str] = None, shared: bool = False, persistent: bool = False,
                 inbox_size: int = 100_000):
        self.metrics = metrics
        self.host, self.port = host, port
        self.username, self.password = username, password
        self.client_id = client_id
        self.persistent = persistent
        self.tls_ca = tls_ca
        self.topic = SHARED_UPLINKS if shared else UPLINKS
        self.inbox: queue.Queue = queue.Queue(maxsize=inbox_size)
        self.connected = threading.Event()
        self.client = None
        # a message's tag is (connection, packet id): a packet id is acknowledged only on the connection that
        # delivered it (after a reconnect the broker may give the same id to another message; a persistent
        # session sends the unacknowledged ones again, with their new tags)
        self.generation = 0

    def _make_client(self):
        import paho.mqtt.client as mqtt

        from . import mqttclient
        cls = mqttclient.Client if mqttclient.fast() else mqtt.Client
        c = cls(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                        clean_session=not self.persistent,
                        protocol=mqtt.MQTTv311, manual_ack=True)
        if self.username:
            c.username_pw_set(self.username, self.password)
        if self.tls_ca:
            c.tls_set_context(ssl.create_default_context(cafile=self.tls_ca))
        c.max_inflight_messages_set(200)
        c.max_queued_messages_set(0)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.reconnect_delay_set(0.2, 5)
        return c

    def start(self) -> None:
        self.client = self._make_client()
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()

    def stop(self) -> None:
        if self.client is None:
            return
        self.client.loop_stop()
        try:
            self.client.disconnect()
        except Exception:
            pass

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            log.warning("broker refused the bridge: %s", reason_code)
            return
        self.generation += 1
        client.subscribe(self.topic, qos=1)
        self.connected.set()
        log.info("bridge connected to %s:%s as %s, subscribed to %s", self.host, self.port, self.client_id,
                 self.topic)
        self.inbox.put(("connected", None, None))

    def ack(self, tags) -> None:
        """Acknowledge applied uplinks (after their transaction committed), by their tags from the inbox."""
        gen = self.generation
        mids = [mid for g, mid in tags if g == gen]
        ack_all = getattr(self.client, "ack_all", None)
        if ack_all is not None:
            ack_all(mids)  # one write for the chunk (mqttclient.py)
            return
        for mid in mids:
            self.client.ack(mid, 1)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.connected.clear()
        log.warning("bridge disconnected from the broker (%s)", reason_code)

    def _on_message(self, client, userdata, msg):
        try:
            self.inbox.put_nowait(((self.generation, msg.mid) if msg.qos else None, msg.topic, msg.payload))
        except queue.Full:
            # not acknowledged: the broker keeps it for this session and sends it again after a reconnect
            self.metrics.add("overload")

    def publish(self, topic: str, payload: bytes, *, retain: bool = False):
        """QoS 1; returns paho's MessageInfo (wait_for_publish: the broker's PUBACK), None if refused here."""
        if len(payload) > MAX_DOWN:
            self.metrics.add("down_oversize")
            log.error("not publishing %s: %d bytes exceed %d", topic, len(payload), MAX_DOWN)
            return None
        return self.client.publish(topic, payload, qos=1, retain=retain)
