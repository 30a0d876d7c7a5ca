"""A mosquitto broker for one machine (dev stack, production launcher, tests, benchmarks): config, credentials, process.

Credentials live in mosquitto's dynamic-security plugin, changed at run time by the cloud
(cloud/broker_credentials.py) over `$CONTROL/dynamic-security/v1`; nothing is rewritten per lock here.
This module writes, once, before the broker starts:

- `dynsec.json`: the plugin's state with an admin client (the cloud's credential manager), the bridge client
  and its role; default access is deny, so a lock's client has no rights of its own in the plugin;
- `acl`: two patterns, the same for every lock (`%u` = the lock's username = its id). mosquitto 2.0's plugin
  has no `%u` in its ACLs, and it defers to this file whenever it has no rule of its own;
- `mosquitto.conf`: loopback listeners (plain, and TLS when asked), the plugin, the ACL file.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import socket
import subprocess
import time
from pathlib import Path

from tools.supervisor import end

MOSQUITTO = os.environ.get("KEYDROP_MOSQUITTO", "/usr/sbin/mosquitto")
DYNSEC_PLUGIN = os.environ.get("KEYDROP_DYNSEC_PLUGIN", "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so")
ADMIN_USER = "keydrop-admin"
BRIDGE_USER = "bridge"

ACL = """\
# the same for every lock (username = lock id): it reads its downlink and writes its uplink, nothing else
pattern read lock/%u/down
pattern write lock/%u/up
"""

# The bridge (every worker logs in as BRIDGE_USER): all uplinks, shared or not, and every downlink.
BRIDGE_ROLE = {"rolename": "bridge", "acls": [
    {"acltype": "subscribePattern", "topic": "lock/+/up", "allow": True},
    {"acltype": "subscribePattern", "topic": "$share/+/lock/+/up", "allow": True},
    {"acltype": "publishClientReceive", "topic": "lock/+/up", "allow": True},
    {"acltype": "publishClientSend", "topic": "lock/+/down", "allow": True},
]}
ADMIN_ROLE = {"rolename": "admin", "acls": [
    {"acltype": t, "topic": "$CONTROL/dynamic-security/#", "allow": True}
    for t in ("publishClientSend", "publishClientReceive", "subscribePattern", "unsubscribePattern")]}


def installed() -> bool:
    """Whether the mosquitto this module runs is there (tools/sysdeps installs it)."""
    return os.path.exists(MOSQUITTO)


def dynsec_client(username: str, password: str, *, clientid: str | None = None, roles=()) -> dict:
    """One client entry of the plugin's file (PBKDF2-SHA512, 101 iterations: what the plugin itself writes)."""
    salt = secrets.token_bytes(12)
    entry = {"username": username, "password": base64.b64encode(
        hashlib.pbkdf2_hmac("sha512", password.encode(), salt, 101)).decode(),
        "salt": base64.b64encode(salt).decode(), "iterations": 101, "roles": [{"rolename": r} for r in roles]}
    if clientid:
        entry["clientid"] = clientid
    return entry


def write_dynsec(path: Path, *, admin_password: str, bridge_password: str, extra_clients=(),
                 extra_roles=()) -> None:
    """The plugin's file with the admin and bridge clients set to these passwords; the lock clients an
    earlier run left in it stay (a restarted dev stack keeps its locks), `extra_clients` are added."""
    try:
        kept = [c for c in json.loads(path.read_text()).get("clients", [])
                if c.get("username") not in (ADMIN_USER, BRIDGE_USER)]
    except (OSError, ValueError):
        kept = []
    state = {
        "defaultACLAccess": {"publishClientSend": False, "publishClientReceive": False,
                             "subscribe": False, "unsubscribe": True},
        "clients": [dynsec_client(ADMIN_USER, admin_password, roles=["admin"]),
                    dynsec_client(BRIDGE_USER, bridge_password, roles=["bridge"]), *kept, *extra_clients],
        "roles": [ADMIN_ROLE, BRIDGE_ROLE, *extra_roles], "groups": [],
    }
    _atomic_write(path, json.dumps(state))


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _username() -> str:
    import pwd
    return pwd.getpwuid(os.geteuid()).pw_name


def write_config(directory: Path, *, port: int | None, tls_port: int | None = None,
                 tls_dir: Path | None = None) -> Path:
    directory = Path(directory)
    lines = [
        "per_listener_settings false",
        "allow_anonymous false",
        f"plugin {DYNSEC_PLUGIN}",
        f"plugin_opt_config_file {directory / 'dynsec.json'}",
        f"acl_file {directory / 'acl'}",
        "persistence false",
        "log_dest stderr",
        "log_type error",
        "log_type warning",
        "max_packet_size 65536",
        # the bridge may briefly fall behind a burst: queue for it rather than drop (QoS 1)
        "max_queued_messages 100000",
        "max_inflight_messages 1000",
        "set_tcp_nodelay true",
        # run as whoever started us (tests run as root in CI; the files are private to that user)
        f"user {_username()}",
    ]
    if port:
        lines.append(f"listener {port} 127.0.0.1")
    if tls_port:
        assert tls_dir is not None
        lines += [f"listener {tls_port} 127.0.0.1", f"cafile {tls_dir / 'ca.crt'}",
                  f"certfile {tls_dir / 'server.crt'}", f"keyfile {tls_dir / 'server.key'}", "tls_version tlsv1.2"]
    conf = directory / "mosquitto.conf"
    conf.write_text("\n".join(lines) + "\n")
    _atomic_write(directory / "acl", ACL)
    return conf


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with code {proc.returncode} while starting") from None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class Mosquitto:
    """A mosquitto process on loopback with the dynamic-security plugin; stop()/start() keep the ports and
    the credentials (the plugin's file survives a restart, as in production).

    `admin_env()` is what the cloud needs to manage lock credentials; the bridge logs in as BRIDGE_USER with
    `bridge_password`. `tls=True` adds a TLS listener with a throwaway CA (tools/localca.py) unless `tls_dir`
    names existing ca.crt/server.crt/server.key; `plain=False` drops the plain listener."""

    def __init__(self, directory: Path, *, port: int | None = None, tls: bool = False, plain: bool = True,
                 tls_port: int | None = None, tls_dir: Path | None = None, bridge_password: str | None = None,
                 admin_password: str | None = None, extra_clients=(), extra_roles=()):
        from tools import localca
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = (port or free_port()) if plain else None
        self.tls_port = (tls_port or free_port()) if tls else None
        self.tls_dir = Path(tls_dir) if tls_dir else (localca.make_ca(self.dir / "tls") if tls else None)
        self.bridge_password = bridge_password or secrets.token_hex(16)
        self.admin_password = admin_password or secrets.token_hex(16)
        write_dynsec(self.dir / "dynsec.json", admin_password=self.admin_password,
                     bridge_password=self.bridge_password, extra_clients=extra_clients, extra_roles=extra_roles)
        self.conf = write_config(self.dir, port=self.port, tls_port=self.tls_port, tls_dir=self.tls_dir)
        self.proc: subprocess.Popen | None = None

    @property
    def pidfile(self) -> Path:
        return self.dir / "mosquitto.pid"

    def argv(self) -> list[str]:
        return [MOSQUITTO, "-c", str(self.conf)]

    def admin_env(self) -> dict[str, str]:
        """The cloud's settings for managing credentials on this broker (cloud/broker_credentials.py)."""
        env = {"MQTT_ADMIN_USERNAME": ADMIN_USER, "MQTT_ADMIN_PASSWORD": self.admin_password}
        if self.port:
            env.update(MQTT_ADMIN_HOST="127.0.0.1", MQTT_ADMIN_PORT=str(self.port), MQTT_ADMIN_TLS="0")
        else:
            env.update(MQTT_ADMIN_HOST="localhost", MQTT_ADMIN_PORT=str(self.tls_port), MQTT_ADMIN_TLS="1",
                       MQTT_ADMIN_CA_FILE=str(self.tls_dir / "ca.crt"))
        return env

    def start(self, timeout: float = 60.0) -> "Mosquitto":
        log = open(self.dir / "mosquitto.log", "ab")
        self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=log)
        self.pidfile.write_text(str(self.proc.pid))
        for p in (self.port, self.tls_port):
            if p:
                wait_port(p, timeout, self.proc)
        return self

    def stop(self) -> None:
        end(self.proc, 10)
        self.proc = None
