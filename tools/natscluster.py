"""A 3-node NATS cluster with MQTT on loopback (Debian's nats-server 2.9): the clustered-broker proof and its bench.

Each node: a server name, JetStream (MQTT sessions and retained messages live in JetStream streams, replicated
on all 3 nodes), a cluster route to the others, an MQTT listener. Logins are static users in the config (NATS
has no run-time credential API like mosquitto's dynamic security; an operator would use its account/JWT
tooling); NATS 2.9's MQTT has no shared subscriptions, so one bridge serves a NATS cluster.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from tools.mosquitto import free_port, wait_port
from tools.mqttprobe import connect_once

NATS = os.environ.get("KEYDROP_NATS", shutil.which("nats-server") or "/usr/sbin/nats-server")


class NatsCluster:
    """Ports are chosen at construction (locks' configs can name them); `users` is read when start() runs."""

    def __init__(self, directory: Path, users: dict[str, str], nodes: int = 3):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.users = users
        self.client_ports = [free_port() for _ in range(nodes)]
        self.route_ports = [free_port() for _ in range(nodes)]
        self.mqtt_ports = [free_port() for _ in range(nodes)]
        self.procs: list[subprocess.Popen | None] = [None] * nodes

    def write_configs(self) -> None:
        nodes = len(self.procs)
        routes = ", ".join(f"nats://127.0.0.1:{p}" for p in self.route_ports)
        # passwords as JSON strings: valid NATS config syntax whatever characters they hold
        users_conf = ", ".join(f"{{user: {json.dumps(u)}, password: {json.dumps(p)}}}" for u, p in self.users.items())
        for i in range(nodes):
            (self.dir / f"n{i}.conf").write_text(f"""
server_name: kd-n{i}
listen: 127.0.0.1:{self.client_ports[i]}
jetstream {{ store_dir: {json.dumps(str(self.dir / f"js{i}"))} }}
cluster {{ name: keydrop, listen: 127.0.0.1:{self.route_ports[i]}, routes: [{routes}] }}
mqtt {{ listen: 127.0.0.1:{self.mqtt_ports[i]}, stream_replicas: {nodes} }}
authorization {{ users: [{users_conf}] }}
""")

    def start_node(self, i: int) -> None:
        log = open(self.dir / f"n{i}.log", "ab")
        self.procs[i] = subprocess.Popen([NATS, "-c", str(self.dir / f"n{i}.conf")], stdout=log,
                                         stderr=subprocess.STDOUT)

    def start(self, timeout: float = 60.0) -> "NatsCluster":
        """Writes the configs with the users as they are now, then starts every node."""
        self.write_configs()
        for i in range(len(self.procs)):
            self.start_node(i)
        for i, p in enumerate(self.mqtt_ports):
            wait_port(p, timeout, self.procs[i])
        return self

    def wait_ready(self, user: str, password: str, timeout: float = 60.0) -> None:
        """Until every node accepts an MQTT login (its MQTT needs the JetStream cluster up, which comes later
        than the listening socket)."""
        import time
        deadline = time.monotonic() + timeout
        for i, port in enumerate(self.mqtt_ports):
            while True:
                try:
                    if connect_once(port, f"ready-probe-{i}", user, password) == 0:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"NATS node {i} does not accept MQTT logins after {timeout} s")
                time.sleep(0.2)

    def kill(self, i: int) -> None:
        """SIGKILL: a node dies without a goodbye, as a crashed host does."""
        p = self.procs[i]
        if p is not None and p.poll() is None:
            p.kill()
            p.wait()

    def stop(self) -> None:
        for p in self.procs:
            if p is not None and p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
