"""A small synchronous client for mosquitto's dynamic-security control API (`$CONTROL/dynamic-security/v1`).

One MQTT session (paho) as the plugin's admin; `run(commands)` publishes one batch of commands and waits for
its responses. The plugin applies a batch and then saves its whole state file once, so callers batch.
"""
from __future__ import annotations

import json
import secrets
import ssl
import threading
from typing import Optional

TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = TOPIC + "/response"


class DynSecError(Exception):
    """The broker could not be reached, refused the admin, did not answer in time, or refused a command."""


class DynSec:
    def __init__(self, *, host: str, port: int, username: str, password: str, ca_file: Optional[str] = None,
                 timeout: float = 10.0):
        import paho.mqtt.client as mqtt
        self.timeout = timeout
        self._cv = threading.Condition()
        self._responses: dict[str, list] = {}
        self._ready = threading.Event()
        self._refused: Optional[str] = None
        # an unguessable id: nobody can end this session by connecting with the same one
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="keydrop-dynsec-" + secrets.token_hex(8),
                        protocol=mqtt.MQTTv311)
        c.username_pw_set(username, password)
        if ca_file:
            c.tls_set_context(ssl.create_default_context(cafile=ca_file))
        c.on_connect = self._on_connect
        c.on_subscribe = lambda *a: self._ready.set()
        c.on_message = self._on_message
        self._client = c
        try:
            c.connect(host, port, keepalive=30)
        except OSError as exc:
            raise DynSecError(f"cannot reach the broker at {host}:{port}: {exc}") from None
        c.loop_start()
        if not self._ready.wait(timeout):
            self.close()
            raise DynSecError(self._refused or f"the broker at {host}:{port} did not accept the admin in {timeout} s")

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            self._refused = f"the broker refused the admin login: {reason_code}"
            return
        client.subscribe(RESPONSE_TOPIC, qos=1)

    def _on_message(self, client, userdata, msg):
        try:
            responses = json.loads(msg.payload)["responses"]
        except (ValueError, KeyError, TypeError):
            return
        with self._cv:
            for r in responses:
                cid = r.get("correlationData")
                if cid:
                    self._responses.setdefault(cid, []).append(r)
            self._cv.notify_all()

    def run(self, commands: list[dict]) -> list[dict]:
        """Send one batch; returns the plugin's response to each command, in order (an `error` key when it
        refused one). Raises DynSecError if the answers do not all arrive within the timeout."""
        if not commands:
            return []
        cid = secrets.token_hex(8)
        tagged = [dict(c, correlationData=f"{cid}.{i}") for i, c in enumerate(commands)]
        self._client.publish(TOPIC, json.dumps({"commands": tagged}), qos=1)
        want = {c["correlationData"] for c in tagged}
        with self._cv:
            if not self._cv.wait_for(lambda: want <= self._responses.keys(), self.timeout):
                raise DynSecError(f"the broker answered {len(want & self._responses.keys())} of {len(want)} "
                                  f"commands in {self.timeout} s")
            return [self._responses.pop(c["correlationData"])[0] for c in tagged]

    def list_clients(self, page: int = 10_000) -> list[str]:
        """Every client's username."""
        names: list[str] = []
        while True:
            r = self.run([{"command": "listClients", "verbose": False, "count": page, "offset": len(names)}])[0]
            if r.get("error"):
                raise DynSecError(f"listClients: {r['error']}")
            got = r.get("data", {}).get("clients", [])
            names += got
            if len(got) < page:
                return names

    def close(self) -> None:
        try:
            self._client.disconnect()  # first: it wakes the network thread, which then stops at once
        except Exception:
            pass
        self._client.loop_stop()

    def __enter__(self) -> "DynSec":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
