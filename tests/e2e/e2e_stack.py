"""End-to-end machinery (the fixtures in conftest.py use it): real mosquitto (generated config, per-lock credentials + ACL, TLS with a test CA),
the cloud as separate processes (web, mailer, bridge), an SMTP sink, and locks simulated by `tools/simlock`
(the firmware on the MicroPython unix port).

- `stack`  (module scope) everything running; `.api(method, path, body)`, `.db()` context for reading the
            database, `.metrics()` the bridge's counters, `.new_lock(mac)` a SimLock registered through the API.
- SimLock  drives `tools/simlock run`: `.send(line)`, `.wait(pred, timeout)` on its JSON events,
            `.enter(code)` → "open" | "refused" | "locked_out" with the real time it took.
Every wait is on an event with a timeout; nothing sleeps for a fixed time.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path


ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.conftest import free_port  # noqa: E402
from tests.waiting import wait_until  # noqa: E402,F401  (the e2e tests import it from here)
from tools.mosquitto import MOSQUITTO, Mosquitto, dynsec_client, installed, wait_port  # noqa: E402
from tools.cloudclient import ApiClient, api_url  # noqa: E402
from tools.supervisor import end  # noqa: E402

BIN = ROOT / ".venv" / "bin"
FLASK = str(BIN / "flask") if (BIN / "flask").exists() else "flask"
PY = str(BIN / "python") if (BIN / "python").exists() else sys.executable
BRIDGE_PASSWORD = "bridge-test-password"
# A test login that reads and writes every lock's topics: what an attacker who owns the broker can do (the
# replay, tamper and flood tests) and how the tests watch the wire. The bridge's own login cannot write uplinks.
OBSERVER = ("e2e-observer", "observer-test-password")



def mosquitto_available() -> bool:
    return installed()


class Proc:
    def __init__(self, name: str, args: list[str], env: dict, logdir: Path):
        self.name = name
        self.args = args
        self.env = env
        self.log = logdir / f"{name}.log"
        self.p: subprocess.Popen | None = None

    def start(self) -> "Proc":
        f = open(self.log, "ab")
        self.p = subprocess.Popen(self.args, env=self.env, cwd=str(ROOT), stdout=f, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        return self

    def stop(self) -> None:
        end(self.p, 10)

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


class SimLock:
    """A `tools/simlock run DIR` process and its JSON events."""

    def __init__(self, directory: Path, env: dict):
        self.dir = directory
        self.env = env
        self.events: list[dict] = []
        self.relay_open = False
        self._cv = threading.Condition()
        self.p: subprocess.Popen | None = None
        self.lock_id = json.loads((directory / "flash" / "config.json").read_text())["lock_id"]

    def start(self) -> "SimLock":
        heap = ["--heap", self.env["E2E_HEAP"]] if self.env.get("E2E_HEAP") else []  # the default: 128k
        self.p = subprocess.Popen([PY, str(ROOT / "tools" / "simlock"), "run", str(self.dir), *heap], cwd=str(ROOT),
                                  env=self.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=open(self.dir / "stderr.log", "ab"), text=True, bufsize=1,
                                  start_new_session=True)
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self) -> None:
        assert self.p and self.p.stdout
        for line in self.p.stdout:
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            ev["_t"] = time.monotonic()
            if ev.get("event") == "relay":
                self.relay_open = ev.get("state") == "open"
            with self._cv:
                self.events.append(ev)
                self._cv.notify_all()

    def mark(self) -> int:
        with self._cv:
            return len(self.events)

    def send(self, line: str) -> None:
        assert self.p and self.p.stdin
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()

    def wait(self, pred, timeout: float = 20.0, since: int = 0, what: str = "event") -> dict:
        deadline = time.monotonic() + timeout
        i = since
        with self._cv:
            while True:
                while i < len(self.events):
                    ev = self.events[i]
                    i += 1
                    if pred(ev):
                        return ev
                left = deadline - time.monotonic()
                if left <= 0:
                    tail = "\n".join(json.dumps(e) for e in self.events[-15:])
                    raise AssertionError(f"lock {self.lock_id}: timed out waiting for {what}; last events:\n{tail}")
                self._cv.wait(left)

    def cmd(self, line: str, timeout: float = 30.0) -> None:
        """Send a line and wait until the lock has worked through it (its next "settled")."""
        m = self.mark()
        self.send(line)
        self.wait(lambda e: e.get("event") == "settled", timeout, m, f"settled after {line!r}")

    def enter(self, code: str, timeout: float = 20.0) -> tuple[str, float]:
        """Type a code + '#'; returns ("open"|"refused"|"locked_out", real seconds until the outcome)."""
        m = self.mark()
        t0 = time.monotonic()
        self.send(code + "#")
        ev = self.wait(lambda e: e.get("event") == "feedback" and e.get("kind") in (
            "accepted", "refused", "locked_out"), timeout, m, f"outcome of {code}")
        self.wait(lambda e: e.get("event") == "settled", timeout, m, "settled")
        outcome = "open" if ev["kind"] == "accepted" else ev["kind"]
        if outcome == "open":
            assert self.relay_open, "accepted but the relay is not energised"
        return outcome, ev["_t"] - t0

    def link_event(self, key, value=None, since: int = 0, timeout: float = 30.0) -> dict:
        return self.wait(lambda e: e.get("event") == "link" and key in e and (value is None or e[key] == value),
                         timeout, since, f"link {key}={value}")

    def stop(self) -> None:
        if self.p and self.p.poll() is None:
            try:
                self.send("!quit")
            except (BrokenPipeError, OSError, ValueError):
                pass
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait()


class Stack:
    def __init__(self, tmp: Path):
        from tests.conftest import SmtpSink
        self.tmp = tmp
        self.procs: list[Proc] = []
        self.locks: list[SimLock] = []
        everything = {"rolename": "observer", "acls": [{"acltype": t, "topic": "lock/#", "allow": True} for t in (
            "publishClientSend", "publishClientReceive", "subscribePattern")]}
        self.broker = Mosquitto(tmp / "mqtt", tls=True, bridge_password=BRIDGE_PASSWORD, extra_roles=[everything],
                                extra_clients=[dynsec_client(*OBSERVER, roles=["observer"])])
        self.ca = str(self.broker.tls_dir / "ca.crt")
        self.smtp = SmtpSink().start()
        self.db_url = f"sqlite:///{tmp / 'keydrop.sqlite3'}"
        self.web_port = free_port()
        self.url = f"http://127.0.0.1:{self.web_port}"
        self.metrics_file = tmp / "bridge-metrics.json"
        self.env = dict(os.environ, DATABASE_URL=self.db_url, SECRET_KEY="e2e-secret", RATELIMIT_ENABLED="0",
                        MAIL_SERVER="127.0.0.1", MAIL_PORT=str(self.smtp.port), MAILER_POLL_INTERVAL="0.2",
                        MAILER_BACKOFF_BASE_S="1",
                        MQTT_PUBLIC_HOST="localhost", MQTT_PUBLIC_PORT=str(self.broker.tls_port),
                        MQTT_PUBLIC_TLS="1",
                        MQTT_HOST="localhost", MQTT_PORT=str(self.broker.tls_port), MQTT_TLS="1",
                        MQTT_CA_FILE=self.ca, MQTT_USERNAME="bridge", MQTT_PASSWORD=BRIDGE_PASSWORD,
                        **self.broker.admin_env(),
                        KEYDROP_BRIDGE_METRICS=str(self.metrics_file), KEYDROP_BRIDGE_EXPIRE_EVERY="1",
                        PYTHONUNBUFFERED="1", FLASK_DEBUG="0")
        self.env.pop("SIMLOCK_DIR", None)
        self.logs = tmp / "logs"
        self.logs.mkdir()
        self.token = None
        self.owner_email = "owner@e2e.example.com"

    # -------------------------------------------------------------- lifecycle
    def start(self) -> "Stack":
        self.broker.start()
        self._init_db()
        self.web = self._proc("web", [FLASK, "--app", "cloud", "run", "--port", str(self.web_port),
                                      "--no-reload", "--no-debugger"])
        self.mailer = self._proc("mailer", [FLASK, "--app", "cloud", "mailer", "--interval", "0.2"])
        self.bridge = self._proc("bridge", [FLASK, "--app", "cloud", "bridge"])
        wait_port(self.web_port, 30)
        r = subprocess.run([FLASK, "--app", "cloud", "agency", "create", "--name", "E2E Rentals", "--email",
                            self.owner_email, "--password", "e2e password 1"], env=self.env, cwd=str(ROOT),
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        self.token = ApiClient(api_url(self.url), basic=(self.owner_email, "e2e password 1")).new_token()
        wait_until(lambda: self.metrics().get("connects"), 30, "the bridge to connect")
        return self

    @contextmanager
    def running(self):
        """The stack started for the `with` block and stopped after it; if it fails to come up, each process's
        last output is printed so the test report says why."""
        try:
            self.start()
        except BaseException:
            for p in self.procs:
                print(f"--- {p.name} ---\n{p.tail()}")
            self.stop()
            raise
        try:
            yield self
        finally:
            self.stop()

    def _proc(self, name, args) -> Proc:
        p = Proc(name, args, self.env, self.logs).start()
        self.procs.append(p)
        return p

    def _init_db(self) -> None:
        from cloud import create_app
        from cloud.extensions import db
        import cloud.bridge  # noqa: F401  (its table)
        self.app = create_app({"SQLALCHEMY_DATABASE_URI": self.db_url, "TESTING": True})
        with self.app.app_context():
            db.create_all()

    def stop(self) -> None:
        for lk in self.locks:
            lk.stop()
        for p in reversed(self.procs):
            p.stop()
        self.broker.stop()
        self.smtp.stop()

    # -------------------------------------------------------------- helpers
    def api(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        """(status, body) of the agency's API at PATH (/api/v1/...), with the stack's token."""
        return ApiClient(self.url, token=self.token).call(method, path, body)

    @contextmanager
    def db(self):
        from cloud.extensions import db
        with self.app.app_context():
            try:
                yield db.session
            finally:
                db.session.remove()

    def metrics(self) -> dict:
        try:
            return json.loads(self.metrics_file.read_text())
        except (OSError, ValueError):
            return {}

    def new_lock(self, mac: str, *, start: bool = True) -> SimLock:
        d = self.tmp / f"lock-{mac}"
        r = subprocess.run([PY, str(ROOT / "tools" / "simlock"), "init", str(d), "--cloud", self.url,
                            "--token", self.token, "--mac", mac, "--name", f"Flat {mac[-2:]}",
                            "--address", "3 rue des Tests, Lyon", "--timezone", "Europe/Paris", "--ca", self.ca],
                           cwd=str(ROOT), env=self.env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        lk = SimLock(d, self.env)
        self.locks.append(lk)
        if start:
            lk.start()
        return lk

    def mails(self, to: str, subject_part: str = "") -> list:
        return [m for m in self.smtp.to(to) if subject_part in str(m["Subject"])]

    def wait_mail(self, to: str, subject_part: str, count: int = 1, timeout: float = 30.0) -> list:
        return wait_until(lambda: (lambda ms: ms if len(ms) >= count else None)(self.mails(to, subject_part)),
                          timeout, f"{count} mail(s) to {to} about {subject_part!r}")

    def wait_metric(self, name: str, at_least: int, timeout: float = 20.0) -> int:
        return wait_until(lambda: (lambda v: v if v >= at_least else None)(self.metrics().get(name, 0)),
                          timeout, f"bridge metric {name} >= {at_least} (now {self.metrics()})")

    def mqtt_client(self, username: str, password: str, *, ca: str | None = "default", client_id=None,
                    subscribe=None):
        """A paho client connected over TLS (loop started); returns (client, received list). `subscribe`
        is (re)done on every connect (the broker restarts in some tests)."""
        import paho.mqtt.client as mqtt
        import ssl
        got: list = []
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"t-{time.monotonic_ns()}")
        c.username_pw_set(username, password)
        ctx = ssl.create_default_context(cafile=self.ca if ca == "default" else ca)
        c.tls_set_context(ctx)
        c.on_message = lambda cl, ud, msg: got.append((msg.topic, msg.payload, msg.retain))
        if subscribe:
            c.on_connect = lambda cl, ud, fl, rc, props: cl.subscribe(subscribe)
        c.connect("localhost", self.broker.tls_port, 30)
        c.loop_start()
        return c, got




def run_mp(source: str, timeout: float = 60.0) -> str:
    """Run MicroPython source on the unix port with the firmware (its MQTT client included) on the path."""
    from sim import mpbuild
    env = dict(os.environ)
    mpbuild.build()
    env["MICROPYPATH"] = ".frozen:" + str(mpbuild.BUILD / "device")
    r = subprocess.run(mpbuild.command() + ["-c", source], env=env, capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout
