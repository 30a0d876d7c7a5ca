"""A simulated fleet for the fleet benchmark and its test: asyncio MQTT locks speaking the lock protocol against a
real mosquitto, bridge workers (`flask --app cloud bridge`) and one database, with every message counted.

Each simulated lock verifies and parses every downlink like the firmware (HMAC over the exact bytes, revision
check, digests decoded), answers with signed counted uplinks, keeps its session alive (PINGREQ) and reconnects
with full-jitter backoff when the broker drops it (new will, new hello), as device/link.py does.
"""
from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import struct
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BRIDGE_PASSWORD = "fleet-bridge"


def make_broker(directory: Path, creds: list[tuple[str, bytes, str]]):
    """A mosquitto (tools/mosquitto.py, dynamic security) whose logins already hold the fleet's locks, each bound to
    its client id kd-<id> (as broker_credentials.grant makes them; written in one file, not 10,000 commands)."""
    from tools.mosquitto import Mosquitto, dynsec_client
    return Mosquitto(directory, bridge_password=BRIDGE_PASSWORD,
                     extra_clients=[dynsec_client(lid, pw, clientid=f"kd-{lid}") for lid, _, pw in creds])
KEEPALIVE = 60
HELLO_FIRST, HELLO_MAX, HELLO_MIN = 30.0, 600.0, 10.0  # device/link.py's repeat of an unanswered hello (seconds)


def pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    return xs[min(len(xs) - 1, max(0, int(round(p / 100 * (len(xs) - 1)))))]


def _vlen(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _s(b) -> bytes:
    if isinstance(b, str):
        b = b.encode()
    return struct.pack("!H", len(b)) + b


class AioMqtt:
    """A minimal asyncio MQTT 3.1.1 client: QoS 0/1 publish, QoS 1 subscribe, will, auth, keepalive pings."""

    def __init__(self, client_id, user, password, on_message, on_lost=None):
        self.client_id, self.user, self.password = client_id, user, password
        self.on_message, self.on_lost = on_message, on_lost
        self.pid = 0
        self.w = None
        self.closing = False
        self.retained = False  # the retain flag of the message being delivered

    async def connect(self, host, port, will=None):
        r, w = await asyncio.open_connection(host, port)
        self.r, self.w = r, w
        flags = 0x02 | 0x80 | 0x40
        payload = _s(self.client_id)
        if will:
            flags |= 0x04 | (1 << 3)
            payload += _s(will[0]) + _s(will[1])
        payload += _s(self.user) + _s(self.password)
        body = b"\x00\x04MQTT\x04" + bytes([flags]) + struct.pack("!H", KEEPALIVE) + payload
        w.write(b"\x10" + _vlen(len(body)) + body)
        ack = await r.readexactly(4)
        if ack[3] != 0:
            w.close()
            raise RuntimeError(f"CONNACK {ack[3]} for {self.client_id}")
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._reader()), loop.create_task(self._pinger())]

    @property
    def up(self) -> bool:
        return self.w is not None and not self.w.is_closing()

    def subscribe(self, topic):
        self.pid = self.pid % 65535 + 1
        body = struct.pack("!H", self.pid) + _s(topic) + b"\x01"
        self.w.write(b"\x82" + _vlen(len(body)) + body)

    def publish(self, topic, payload, qos=1, retain=False) -> bool:
        """False when the connection is gone (the caller counts it: the message never left)."""
        if not self.up:
            return False
        t = _s(topic)
        if qos:
            self.pid = self.pid % 65535 + 1
            t += struct.pack("!H", self.pid)
        self.w.write(bytes([0x30 | qos << 1 | int(retain)]) + _vlen(len(t) + len(payload)) + t + payload)
        return True

    async def _pinger(self):
        # the broker closes a client silent for 1.5 x keepalive: a lock pings well before that
        try:
            while self.up:
                await asyncio.sleep(KEEPALIVE / 3 * (0.8 + 0.4 * random.random()))
                if self.up:
                    self.w.write(b"\xc0\x00")
        except asyncio.CancelledError:
            pass

    async def _reader(self):
        r = self.r
        try:
            while True:
                h = await r.readexactly(1)
                n, sh = 0, 0
                while True:
                    b = (await r.readexactly(1))[0]
                    n |= (b & 0x7F) << sh
                    sh += 7
                    if not b & 0x80:
                        break
                data = await r.readexactly(n) if n else b""
                op = h[0]
                if op & 0xF0 == 0x30:
                    tl = data[0] << 8 | data[1]
                    topic = data[2:2 + tl].decode()
                    off = 2 + tl
                    if op & 6:
                        self.w.write(b"\x40\x02" + data[off:off + 2])
                        off += 2
                    self.retained = bool(op & 1)  # set by the broker only on a state sent because of a new
                    self.on_message(topic, data[off:])  # subscription (a live one arrives with 0)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            if self.w is not None:
                self.w.close()
            for t in self._tasks[1:]:
                t.cancel()
            if not self.closing and self.on_lost:
                self.on_lost()

    def close(self):
        self.closing = True
        if self.w is not None:
            self.w.close()


class FleetLock:
    """One simulated lock: the firmware's link behaviour without the keypad."""

    def __init__(self, lock_id: str, secret: bytes, password: str, fleet: "Fleet"):
        from cloud.bridge import Envelope
        self.id = lock_id
        self.env = Envelope(secret)
        self.up = f"lock/{lock_id}/up"
        self.down = f"lock/{lock_id}/down"
        self.n = 0
        self.rev = 0
        self.codes = {}
        self.fleet = fleet
        self.hello_ok = False
        self.nonce = ""
        self.installed: dict[int, float] = {}   # revision → wall time installed
        self.logacks: Counter = Counter()        # seq → logacks received
        self.mqtt = AioMqtt(f"kd-{lock_id}", lock_id, password, self.on_message, self.on_lost)

    def seal(self, obj):
        self.n += 1
        obj["n"] = self.n
        return self.env.seal(self.up, obj)

    def send(self, obj, kind: str) -> bool:
        ok = self.mqtt.publish(self.up, self.seal(obj))
        self.fleet.counts[("sent_" if ok else "unsent_") + kind] += 1
        return ok

    def send_log(self, seq: int) -> bool:
        """One access-log event in its own message (the firmware batches up to 16; one keeps the count exact)."""
        return self.send({"v": 1, "t": "log", "ev": [{"seq": seq, "ts": int(time.time()), "kind": "open"}]}, "log")

    async def start(self):
        will = self.seal({"v": 1, "t": "will"})
        w = self.n
        self.hello_ok = False
        self.nonce = os.urandom(8).hex()
        await self.mqtt.connect(self.fleet.host, self.fleet.port, will=(self.up, will))
        self.mqtt.subscribe(self.down)
        hello = {"v": 1, "t": "hello", "will": w, "fw": "bench", "boot": 1, "time": None, "rev": self.rev,
                 "nonce": self.nonce}
        self.send(dict(hello), "hello")
        asyncio.get_running_loop().create_task(self._repeat_hello(hello, self.mqtt.w))

    async def _repeat_hello(self, hello: dict, conn):
        """As device/link.py: the same session's hello again until the cloud's `time` answers it, full jitter
        under a ceiling of 30 s doubling to 10 minutes, never sooner than 10 s."""
        cap = HELLO_FIRST
        while True:
            await asyncio.sleep(max(HELLO_MIN, random.uniform(0, cap)))
            if self.hello_ok or self.fleet.stopping or self.mqtt.w is not conn or not self.mqtt.up:
                return
            self.send(dict(hello), "hello_repeat")
            cap = min(cap * 2, HELLO_MAX)

    def on_lost(self):
        self.fleet.counts["disconnects"] += 1
        if not self.fleet.stopping:
            asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self):
        attempt = 0
        while not self.fleet.stopping:
            await asyncio.sleep(random.uniform(0, min(self.fleet.backoff_cap, 0.5 * 2 ** attempt)))
            try:
                await self.start()
                self.fleet.counts["reconnects"] += 1
                return
            except (OSError, RuntimeError, asyncio.IncompleteReadError):
                attempt += 1

    def on_message(self, topic, payload):
        try:
            msg = self.env.open(self.down, payload)
        except ValueError:
            self.fleet.counts["refused"] += 1
            return
        t = msg.get("t")
        if t == "time":
            if msg.get("nonce") == self.nonce:
                self.hello_ok = True
        elif t == "logack":
            self.logacks[msg["seq"]] += 1
        elif t == "state":
            self.fleet.counts["states_in"] += 1
            if not self.mqtt.retained:  # forwarded as the bridge published it: its arrival time ≈ the publication's
                self.fleet.live_states.append(time.monotonic())
            rev = msg["rev"]
            if rev < self.rev:
                self.fleet.counts["stale_state"] += 1
                return
            if rev > self.rev:
                blob = base64.b64decode(msg["c"]) if msg["n"] else b""
                assert len(blob) == 44 * msg["n"]
                self.codes = {}
                for o in range(0, len(blob), 44):
                    dg, cid, vf, vu = struct.unpack_from(">32sIII", blob, o)
                    self.codes[cid] = (dg, vf, vu)
                self.rev = rev
                self.installed.setdefault(rev, time.time())
            self.send({"v": 1, "t": "ack", "rev": rev}, "ack")


class Fleet:
    def __init__(self, host: str, port: int, backoff_cap: float = 4.0):
        self.host, self.port = host, port
        self.backoff_cap = backoff_cap
        self.locks: list[FleetLock] = []
        self.counts: Counter = Counter()
        self.live_states: list[float] = []  # arrival times (monotonic) of the states not sent as retained
        self.stopping = False

    async def connect_all(self, wave: int = 100):
        for i in range(0, len(self.locks), wave):
            await asyncio.gather(*(fl.start() for fl in self.locks[i:i + wave]))

    def synced(self, desired: dict) -> int:
        return sum(1 for fl in self.locks if fl.hello_ok and fl.rev >= desired.get(fl.id, 1))

    def holding(self, desired: dict) -> int:
        return sum(1 for fl in self.locks if fl.rev >= desired.get(fl.id, 1))

    def close(self):
        """Call inside the event loop."""
        self.stopping = True
        for fl in self.locks:
            fl.mqtt.close()


class Cloud:
    """The database (SQLite file or KEYDROP_FLEET_DATABASE_URL) and the bridge worker processes."""

    def __init__(self, tmp: Path, server_url: str | None = None, state_rate: float | None = None):
        """server_url: a PostgreSQL server on which a private database is created (and dropped by close()).
        Set `broker` (make_broker) after setup()."""
        self.tmp, self.broker = tmp, None
        self._admin = self._private = None
        if server_url:
            import uuid
            import sqlalchemy as sa
            self._private = f"keydrop_fleet_{os.getpid()}_{uuid.uuid4().hex[:6]}"
            self._admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
            with self._admin.connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{self._private}"'))
            self.db_url = sa.engine.make_url(server_url).set(database=self._private).render_as_string(
                hide_password=False)
        else:
            self.db_url = f"sqlite:///{tmp / 'fleet.sqlite3'}"
        self.state_rate = state_rate
        self.worker_db_url: str | None = None  # the workers' way to the database, if not db_url (a proxy)
        self.worker_env: dict[str, str] = {}  # more settings for the workers
        self.workers: dict[int, subprocess.Popen] = {}
        self.base: Counter = Counter()  # counters of workers that were killed or restarted (file kept)

    @property
    def db_kind(self) -> str:
        return self.db_url.split(":", 1)[0].split("+", 1)[0]

    def setup(self, n: int, mac_base: int = 0xB0C000000000) -> list[tuple[str, bytes, str]]:
        from cloud import create_app, domain
        from cloud.extensions import db
        from cloud.models import Lock
        from cloud.timeutil import utcnow
        self.app = create_app({"SQLALCHEMY_DATABASE_URI": self.db_url, "TESTING": True, "MAIL_SUPPRESS_SEND": True})
        with self.app.app_context():
            db.create_all()
            agency, owner = domain.create_agency(name="Fleet", email="fleet@bench.example.com",
                                                 password="fleet bench pw")
            self.owner_id = owner.id
            # rows as register_lock makes them, in one transaction (registering one by one is not what is measured)
            locks = [Lock.new(mac=f"{mac_base + i:012x}", agency=agency, name=f"Bench {i}", address="1 Bench Road",
                              timezone="UTC", by=owner) for i in range(n)]
            now = utcnow()
            for lk in locks:  # a fleet in service: activated once, long ago (no 10,000 "lock online" mails now)
                lk.status, lk.activated_at = "active", now
            db.session.add_all(locks)
            db.session.commit()
            out = [(lk.id, bytes(lk.secret), lk.mqtt_password) for lk in locks]
            db.session.remove()
        return out

    def metrics_path(self, i: int) -> Path:
        return self.tmp / f"bridge-{i}.json"

    def start_worker(self, i: int) -> None:
        env = dict(os.environ, DATABASE_URL=self.worker_db_url or self.db_url, MQTT_HOST="127.0.0.1", MQTT_PORT=str(self.broker.port),
                   MQTT_USERNAME="bridge", MQTT_PASSWORD=BRIDGE_PASSWORD, KEYDROP_BRIDGE_METRICS=str(self.metrics_path(i)),
                   KEYDROP_BRIDGE_WORKER=str(i), MQTT_CLIENT_ID="fleet-bridge",
                   KEYDROP_BRIDGE_EXPIRE_EVERY="3600", SECRET_KEY="bench", PYTHONUNBUFFERED="1")
        if self.state_rate:
            env["KEYDROP_BRIDGE_STATE_RATE"] = str(self.state_rate)
        env.update(self.worker_env)
        gone = self.worker_counts(i)
        gone.pop("held", None)  # a figure of that process, not a count
        self.base.update(gone)
        self.metrics_path(i).unlink(missing_ok=True)
        flask = ROOT / ".venv" / "bin" / "flask"
        logf = open(self.tmp / f"bridge-{i}.log", "ab")
        self.workers[i] = subprocess.Popen([str(flask) if flask.exists() else "flask", "--app", "cloud", "bridge"],
                                           env=env, cwd=str(ROOT), stdout=logf, stderr=subprocess.STDOUT)

    def wait_connected(self, i: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not self.worker_counts(i).get("connects"):
            if time.monotonic() > deadline or self.workers[i].poll() is not None:
                raise RuntimeError(f"bridge worker {i} did not connect: {self.log_tail(i)}")
            time.sleep(0.1)

    def kill_worker(self, i: int) -> None:
        p = self.workers[i]
        p.kill()  # SIGKILL: no clean-up, no last metrics write
        p.wait()

    def stop_all(self) -> None:
        from tools.supervisor import end
        for p in self.workers.values():
            end(p, 10)

    def close(self) -> None:
        self.stop_all()
        if getattr(self, "app", None) is not None:
            from cloud.extensions import db
            with self.app.app_context():
                db.engine.dispose()
        if self._admin is not None:
            import sqlalchemy as sa
            with self._admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{self._private}" WITH (FORCE)'))
            self._admin.dispose()

    def worker_sample(self, i: int) -> tuple[float, Counter] | None:
        """(when the worker wrote its metrics file, wall clock; the counters in it), or None: a rate computed
        from these pairs is exact even when the file was not rewritten for a while (a worker waiting for PUBACKs
        writes nothing), which one computed at the times the file was read is not."""
        try:
            with open(self.metrics_path(i)) as f:  # the time and the counters of the same file
                return os.fstat(f.fileno()).st_mtime, Counter(json.load(f))
        except (OSError, ValueError):
            return None

    def worker_counts(self, i: int) -> Counter:
        try:
            return Counter(json.loads(self.metrics_path(i).read_text()))
        except (OSError, ValueError):
            return Counter()

    def counts(self) -> Counter:
        total = Counter(self.base)
        for i in self.workers:
            total.update(self.worker_counts(i))
        return total

    def log_tail(self, i: int, n: int = 3000) -> str:
        try:
            return (self.tmp / f"bridge-{i}.log").read_text()[-n:]
        except OSError:
            return ""

    def query(self, fn):
        from cloud.extensions import db
        with self.app.app_context():
            try:
                return fn(db)
            finally:
                db.session.remove()

    def desired(self) -> dict:
        from cloud.models import Lock
        import sqlalchemy as sa
        return self.query(lambda db: dict(db.session.execute(sa.select(Lock.id, Lock.desired_revision)).all()))

    def unacked(self) -> int:
        """Locks whose acknowledged revision the cloud has not recorded up to the desired one."""
        from cloud.models import Lock
        import sqlalchemy as sa
        return self.query(lambda db: db.session.scalar(sa.select(sa.func.count()).select_from(Lock).where(
            Lock.acked_revision < Lock.desired_revision)))

    def events(self) -> int:
        from cloud.models import LockEvent
        import sqlalchemy as sa
        return self.query(lambda db: db.session.scalar(sa.select(sa.func.count()).select_from(LockEvent)))

    def bump_all(self) -> int:
        """Every lock's desired state changes at once (as a mass expiry does), queued in the same transaction."""
        from cloud import statequeue
        from cloud.models import Lock
        import sqlalchemy as sa

        def run(db):
            db.session.execute(sa.update(Lock).values(desired_revision=Lock.desired_revision + 1))
            ids = db.session.scalars(sa.select(Lock.id)).all()
            statequeue.enqueue(ids)
            db.session.commit()
            return len(ids)
        return self.query(run)


def generate_codes(db_url: str, owner_id: int, lock_ids: list, rate: float, out) -> None:
    """In its own process, like the web: one code per listed lock at `rate` per second through
    domain.generate_code; sends (code id, lock id, revision, wall time after the commit) to `out`, then None."""
    sys.path.insert(0, str(ROOT))
    from cloud import create_app, domain
    from cloud.extensions import db
    from cloud.models import Lock, User
    from cloud.timeutil import utcnow
    app = create_app({"SQLALCHEMY_DATABASE_URI": db_url, "TESTING": True, "MAIL_SUPPRESS_SEND": True})
    with app.app_context():
        by = db.session.get(User, owner_id)
        t0 = time.monotonic()
        for i, lid in enumerate(lock_ids):
            d = t0 + i / rate - time.monotonic()
            if d > 0:
                time.sleep(d)
            lock = db.session.get(Lock, lid)
            now = utcnow()
            code = domain.generate_code(lock, valid_from=now - timedelta(minutes=1),
                                        valid_until=now + timedelta(days=3), by=by)
            out.put((code.id, lid, code.revision, time.time()))
        db.session.remove()
    out.put(None)


async def code_round(cloud: Cloud, fleet: Fleet, lock_ids: list, rate: float, wait: float) -> dict:
    """Codes created at `rate`/s by another process; every one is counted: a code not installed on its lock
    within `wait` s after the last was created is lost and enters the percentiles as `wait`."""
    import multiprocessing as mp
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    gen = ctx.Process(target=generate_codes, args=(cloud.db_url, cloud.owner_id, lock_ids, rate, q), daemon=True)
    t0 = time.monotonic()
    gen.start()
    loop = asyncio.get_running_loop()
    created = {}
    while True:
        item = await loop.run_in_executor(None, q.get)
        if item is None:
            break
        created[item[0]] = item[1:]
    gen.join(10)
    by_id = {fl.id: fl for fl in fleet.locks}

    def done(lid, rev):
        return any(r >= rev for r in by_id[lid].installed)

    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and not all(done(lid, rev) for lid, rev, _ in created.values()):
        await asyncio.sleep(0.1)
    lat, lost = [], 0
    for lid, rev, t in created.values():
        ts = [at for r, at in by_id[lid].installed.items() if r >= rev]
        if ts:
            lat.append(max(0.0, min(ts) - t))
        else:
            lost += 1
            lat.append(wait)
    return {"codes": len(created), "lost": lost, "p50_ms": pct(lat, 50) * 1000, "p99_ms": pct(lat, 99) * 1000,
            "max_ms": max(lat) * 1000 if lat else float("nan"), "seconds": time.monotonic() - t0}
