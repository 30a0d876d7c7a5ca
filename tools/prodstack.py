"""The production profile on one machine: `make prod-run` (`python -m tools.prodstack`, docs/operations.md).

The engines an operator scales on, each a real server in its own process group, logs under VAR/log/:
  PostgreSQL (its own cluster under VAR, or DATABASE_URL), Redis (the rate limiter's shared counters, or
  REDIS_URL), mosquitto with TLS only (dynamic-security logins; a throwaway CA under VAR/mqtt/tls unless
  --tls-dir gives ca.crt/server.crt/server.key), the web app under gunicorn with N workers, the mailer
  (SMTP from MAIL_SERVER/MAIL_PORT/…, as in production; it also delivers webhooks), the feed and automation
  workers (docs/automation.md) and N bridge workers sharing the uplinks.
Everything else is configured from the environment exactly as in production (cloud/config.py).
Writes VAR/prod.json (URLs, ports, PIDs, the CA file); Ctrl-C or SIGTERM stops every child.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tools.devstack import BIN
from tools.supervisor import ROOT, Child, StackError, Supervisor, run_until_signal, wait_http, wait_tcp
from tools.mosquitto import Mosquitto, free_port


def say(msg: str) -> None:
    print("prodstack: " + msg, flush=True)


def _pg_bin(name: str) -> str:
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    exe = str(found[-1]) if found else shutil.which(name)
    if not exe:
        raise StackError("PostgreSQL is not installed (apt-get install postgresql), or set DATABASE_URL")
    return exe


def _as_postgres(argv: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run it as the postgres user."""
    if os.geteuid() != 0:
        return argv
    return ["su", "postgres", "-s", "/bin/sh", "-c", "exec " + shlex.join(argv)]


class ProdStack(Supervisor):
    """The production engines and the cloud's processes, configured as in production."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        super().__init__(Path(args.var), say)
        self._pg_dir: Path | None = None

    def child_env(self) -> dict:
        return self.env

    # ---------------------------------------------------------------- engines
    def start_postgres(self) -> str:
        if os.environ.get("DATABASE_URL"):
            return os.environ["DATABASE_URL"]
        port = self.ports["postgres"] = free_port()
        # the cluster lives where the postgres user can reach it (a root-owned VAR may be closed to it)
        self._pg_dir = Path(tempfile.mkdtemp(prefix="keydrop-pg-")) if os.geteuid() == 0 else self.var / "pg"
        self._pg_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self._pg_dir, "postgres")
        subprocess.run(_as_postgres([_pg_bin("initdb"), "-A", "trust", "-U", "keydrop", "-D", str(self._pg_dir / "data")]),
                       check=True, capture_output=True)
        c = self.start("postgres", _as_postgres([_pg_bin("postgres"), "-D", str(self._pg_dir / "data"), "-p", str(port),
                                                 "-k", str(self._pg_dir), "-c", "listen_addresses=127.0.0.1",
                                                 "-c", "fsync=off" if self.args.fast_unsafe else "fsync=on"]),
                       env=dict(os.environ))
        wait_tcp(port, 60, c)
        for _ in range(100):  # accepting TCP comes a moment before accepting sessions
            r = subprocess.run(["psql", "-q", "-h", "127.0.0.1", "-p", str(port), "-U", "keydrop", "-d", "postgres",
                                "-c", "CREATE DATABASE keydrop"], capture_output=True, text=True)
            if r.returncode == 0:
                break
            time.sleep(0.2)
        else:
            raise StackError(f"PostgreSQL did not accept the database: {r.stderr}")
        return f"postgresql+psycopg://keydrop@127.0.0.1:{port}/keydrop"

    def start_redis(self) -> str:
        if os.environ.get("REDIS_URL"):
            return os.environ["REDIS_URL"]
        exe = shutil.which("redis-server")
        if not exe:
            raise StackError("redis-server is not installed (apt-get install redis-server), or set REDIS_URL")
        port = self.ports["redis"] = free_port()
        (self.var / "redis").mkdir(exist_ok=True)
        c = self.start("redis", [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                                 "--dir", str(self.var / "redis")], env=dict(os.environ))
        wait_tcp(port, 30, c)
        return f"redis://127.0.0.1:{port}/0"

    def start_broker(self) -> None:
        st = self.state
        tls_dir = Path(self.args.tls_dir).resolve() if self.args.tls_dir else None
        self.broker = Mosquitto(self.var / "mqtt", tls=True, plain=False, tls_dir=tls_dir,
                                bridge_password=st["bridge_password"], admin_password=st["mqtt_admin_password"])
        self.ports["mqtts"] = self.broker.tls_port
        c = self.start("mosquitto", self.broker.argv(), env=dict(os.environ))
        wait_tcp(self.broker.tls_port, 30, c)

    # ---------------------------------------------------------------- the cloud
    def cloud_env(self, database_url: str, redis_url: str) -> dict:
        b = self.broker
        ca = str(b.tls_dir / "ca.crt")
        env = dict(os.environ)
        env.update({
            "PYTHONUNBUFFERED": "1",
            "SECRET_KEY": self.state["secret_key"],
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "RATELIMIT_STORAGE_URI": redis_url,
            "PUBLIC_BASE_URL": env.get("PUBLIC_BASE_URL", f"http://127.0.0.1:{self.ports['web']}"),
            "MQTT_HOST": "localhost", "MQTT_PORT": str(b.tls_port), "MQTT_TLS": "1", "MQTT_CA_FILE": ca,
            "MQTT_USERNAME": "bridge", "MQTT_PASSWORD": b.bridge_password,
            "MQTT_PUBLIC_HOST": env.get("MQTT_PUBLIC_HOST", "localhost"),
            "MQTT_PUBLIC_PORT": env.get("MQTT_PUBLIC_PORT", str(b.tls_port)), "MQTT_PUBLIC_TLS": "1",
            "KEYDROP_BRIDGE_SHARED": "1" if self.args.bridges > 1 else "0",
            **b.admin_env(),
        })
        return env

    def run(self) -> int:
        self.prepare()
        database_url = self.start_postgres()
        redis_url = self.start_redis()
        self.start_broker()
        self.ports["web"] = self.args.web_port or free_port()
        self.env = self.cloud_env(database_url, redis_url)
        r = subprocess.run([str(BIN / "flask"), "--app", "cloud", "db", "upgrade"], env=self.env, cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            raise StackError(f"`flask db upgrade` failed:\n{r.stdout}{r.stderr}")
        web = self.start("web", [str(BIN / "gunicorn"), "--workers", str(self.args.web_workers), "--bind",
                                 f"127.0.0.1:{self.ports['web']}", "--access-logfile", "-", "--access-logformat",
                                 '%(p)s %(h)s "%(r)s" %(s)s', "cloud:create_app()"])
        self.start("mailer", [str(BIN / "flask"), "--app", "cloud", "mailer"])
        self.start("calendars", [str(BIN / "flask"), "--app", "cloud", "calendars"])
        self.start("automation", [str(BIN / "flask"), "--app", "cloud", "automation"])
        bridges = []
        for i in range(self.args.bridges):
            # a slot per worker: its broker session survives a crash and is resumed by its restart
            bridges.append(self.start(f"bridge-{i + 1}", [str(BIN / "flask"), "--app", "cloud", "bridge"],
                                      dict(self.env, KEYDROP_BRIDGE_WORKER=str(i))))
        wait_http(f"http://127.0.0.1:{self.ports['web']}/healthz", 120, web)
        for b in bridges:
            self.wait_subscribed(b, 120)
        self.banner()
        return self.watch()

    def prepare(self) -> None:
        self.var.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(exist_ok=True)
        path = self.var / "prod-secrets.json"
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            state = {}
        for key in ("secret_key", "bridge_password", "mqtt_admin_password"):
            state.setdefault(key, secrets.token_hex(32 if key == "secret_key" else 16))
        path.write_text(json.dumps(state))
        os.chmod(path, 0o600)
        self.state = state

    @staticmethod
    def wait_subscribed(bridge: Child, timeout: float) -> None:
        """Ready means the uplinks have a reader: a lock's hello sent before any bridge subscribes is lost."""
        deadline = time.monotonic() + timeout
        while "subscribed to" not in bridge.tail(200):
            if not bridge.alive():
                raise StackError(f"{bridge.name} exited while starting; see {bridge.log_path}\n{bridge.tail()}")
            if time.monotonic() > deadline:
                raise StackError(f"{bridge.name} did not subscribe within {timeout:.0f} s; see {bridge.log_path}")
            time.sleep(0.2)

    def banner(self) -> None:
        info = {"web": f"http://127.0.0.1:{self.ports['web']}/", "ports": self.ports,
                "ca": str(self.broker.tls_dir / "ca.crt"), "web_workers": self.args.web_workers,
                "bridges": self.args.bridges, "children": {c.name: c.proc.pid for c in self.children},
                "pid": os.getpid()}
        (self.var / "prod.json").write_text(json.dumps(info, indent=2) + "\n")
        say(f"running: web {info['web']} (gunicorn, {self.args.web_workers} workers), MQTT over TLS on "
            f"localhost:{self.ports['mqtts']} (CA {info['ca']}), {self.args.bridges} bridge(s), PostgreSQL, Redis; "
            f"logs in {self.log_dir}. Ctrl-C stops.")

    def stop(self) -> None:
        super().stop()
        if self._pg_dir is not None and os.geteuid() == 0:
            shutil.rmtree(self._pg_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.prodstack", description=__doc__.split("\n\n")[0])
    ap.add_argument("--var", default=os.environ.get("KEYDROP_PROD_VAR", str(ROOT / "var-prod")),
                    help="folder for state and logs (default ./var-prod or $KEYDROP_PROD_VAR)")
    ap.add_argument("--web-workers", type=int, default=int(os.environ.get("KEYDROP_WEB_WORKERS", 4)))
    # one by default: with a shared subscription two workers can apply a lock's uplinks out of order (a hello
    # handled after the ack that followed it is refused as a replay); see docs/operations.md
    ap.add_argument("--bridges", type=int, default=int(os.environ.get("KEYDROP_BRIDGES", 1)))
    ap.add_argument("--web-port", type=int, default=int(os.environ.get("KEYDROP_WEB_PORT", 0)) or None)
    ap.add_argument("--tls-dir", help="the broker's ca.crt, server.crt, server.key (default: a throwaway CA)")
    ap.add_argument("--fast-unsafe", action="store_true", help="PostgreSQL without fsync (tests only)")
    args = ap.parse_args(argv)
    return run_until_signal(ProdStack(args), say)


if __name__ == "__main__":
    sys.exit(main())
