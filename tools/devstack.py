"""The whole product on one machine: `make run` (`python -m tools.devstack`).

Starts, each in its own process group with its log under VAR/log/:
  mosquitto (MQTT broker, generated config under VAR/mqtt/), an SMTP sink (aiosmtpd, Maildir VAR/maildir/),
  the web app (`flask --app cloud run`), the mailer (`flask --app cloud mailer`, also delivering webhooks), the
  feed and automation workers (`flask --app cloud calendars`, `… automation`), the MQTT bridge
  (`flask --app cloud bridge`) and one simulated lock (`tools/simlock run --keypad-port`, the firmware on the
  MicroPython unix port in real time) serving its virtual keypad page through microdot.
On first run it creates the demo agency, an API token, registers and provisions the simulated lock; later runs
reuse VAR/ (default ./var, or KEYDROP_VAR, or --var). Ctrl-C or SIGTERM stops every child and exits 0.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from cloud.timeutil import DEFAULT_TIMEZONE
from tools import simlock_cloud
from tools.cloudclient import ApiClient, CloudError, api_url
from tools.supervisor import ROOT, StackError, Supervisor, run_until_signal, wait_http, wait_tcp

BIN = Path(sys.executable).parent
DEMO_AGENCY = "Demo Rentals"
DEMO_EMAIL = "demo@agency.example"
DEMO_MAC = "02cafe000001"  # locally administered: never a real board's MAC
DEMO_LOCK_NAME = "Demo flat, front door"
DEMO_ADDRESS = "12 rue de la Démo, 69001 Lyon"
DEMO_TZ = DEFAULT_TIMEZONE  # the cloud's own default: the demo shows what a new lock gets
DEFAULT_PORTS = {"web": 5000, "keypad": 8081, "smtp": 8025, "mqtt": 1883}


def say(msg: str) -> None:
    print("devstack: " + msg, flush=True)


# -- ports -------------------------------------------------------------------------------------------------

def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def pick_port(name: str, wanted: int, strict: bool, taken: set[int]) -> int:
    """The wanted port if free; else (unless strict) the next free one above it, said out loud."""
    for candidate in range(wanted, wanted + 50):
        if candidate not in taken and port_free(candidate):
            if candidate != wanted:
                if strict:
                    break
                say(f"port {wanted} for {name} is taken, using {candidate}")
            taken.add(candidate)
            return candidate
        if strict:
            break
    raise StackError(f"port {wanted} for {name} is taken (another `make run`?). Stop whatever uses it, "
                     f"or choose another port: --{name}-port N")


# -- the stack ---------------------------------------------------------------------------------------------

class Demo:
    """The demo's data: its agency, API token and simulated lock, made through the cloud on the first run and
    reused on later ones (remembered in the stack's state file)."""

    def __init__(self, stack: "Stack"):
        self.stack = stack

    def agency(self) -> None:
        st = self.stack.state
        if st.get("agency_created"):
            return
        say(f"creating the demo agency ({DEMO_EMAIL})")
        r = self.stack.flask("agency", "create", "--name", DEMO_AGENCY, "--email", DEMO_EMAIL,
                             "--password", st["demo_password"], check=False)
        if r.returncode != 0 and "already" not in (r.stdout + r.stderr).lower():
            raise StackError(f"creating the demo agency failed:\n{r.stdout}{r.stderr}")
        st["agency_created"] = True
        self.stack.save_state(st)

    def api(self, token: str | None = None, basic: tuple[str, str] | None = None) -> ApiClient:
        return ApiClient(api_url(self.stack.web_url), token=token, basic=basic, timeout=10)

    def token(self) -> str:
        st = self.stack.state
        try:
            if st.get("api_token"):
                status, _ = self.api(st["api_token"]).call("GET", "/me")
                if status == 200:
                    return st["api_token"]
            st["api_token"] = self.api(basic=(DEMO_EMAIL, st["demo_password"])).new_token()
        except CloudError as e:
            raise StackError(f"getting an API token for the demo agency failed: {e}") from None
        self.stack.save_state(st)
        return st["api_token"]

    def provision_lock(self, lock_dir: Path, token: str) -> None:
        """Give the simulated lock its identity from the cloud, as the installer does for a real one; a lock
        made on an earlier run keeps its flash (codes, log) and only gets fresh credentials (the broker's
        port may have moved)."""
        if (lock_dir / "flash" / "config.json").exists():
            try:
                simlock_cloud.write_credentials(lock_dir / "flash", self.api(token), DEMO_MAC,
                                                cloud_url=self.stack.web_url)
            except CloudError as e:
                raise StackError(f"refreshing the simulated lock's credentials failed: {e}") from None
            return
        say(f"registering the demo lock {DEMO_MAC}")
        r = subprocess.run([sys.executable, str(ROOT / "tools" / "simlock"), "init", str(lock_dir),
                            "--cloud", self.stack.web_url, "--token", token, "--mac", DEMO_MAC,
                            "--name", DEMO_LOCK_NAME, "--address", DEMO_ADDRESS, "--timezone", DEMO_TZ],
                           env=self.stack.cloud_env(), cwd=ROOT, capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise StackError(f"provisioning the simulated lock failed:\n{r.stdout}{r.stderr}")


class Stack(Supervisor):
    """The processes of `make run`: their ports, environment, start order and supervision."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        super().__init__(Path(args.var), say)

    # paths

    @property
    def state_file(self) -> Path:
        return self.var / "devstack.json"

    def load_state(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}

    def save_state(self, state: dict) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.state_file)

    # steps
    def claim_var(self) -> None:
        """One stack per state folder: two would share the database and the simulated lock's flash."""
        import fcntl
        self.var.mkdir(parents=True, exist_ok=True)
        self._lockfile = open(self.var / ".devstack.lock", "a+")
        try:
            fcntl.flock(self._lockfile, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lockfile.seek(0)
            other = self._lockfile.read().strip() or "?"
            raise StackError(f"another dev stack (pid {other}) is using {self.var}: stop it first, "
                             f"or give this one its own folder with --var DIR") from None
        self._lockfile.seek(0)
        self._lockfile.truncate()
        self._lockfile.write(str(os.getpid()))
        self._lockfile.flush()

    def prepare(self) -> None:
        self.claim_var()
        maildir = self.var / "maildir"  # a complete Maildir: aiosmtpd only creates one in a missing folder
        for d in (self.var, self.log_dir, maildir / "tmp", maildir / "new", maildir / "cur", self.var / "mqtt"):
            d.mkdir(parents=True, exist_ok=True)
        state = self.load_state()
        if not state.get("secret_key"):
            state["secret_key"] = secrets.token_hex(32)  # sessions survive a restart of the stack
        for key in ("bridge_password", "mqtt_admin_password"):
            if not state.get(key):
                state[key] = secrets.token_hex(16)
        if not state.get("demo_password"):
            state["demo_password"] = "demo-" + secrets.token_urlsafe(6)
        self.save_state(state)
        self.state = state
        taken: set[int] = set()
        a = self.args
        self.ports = {
            "web": pick_port("web", a.web_port, a.strict_ports, taken),
            "keypad": pick_port("keypad", a.keypad_port, a.strict_ports, taken),
            "smtp": pick_port("smtp", a.smtp_port, a.strict_ports, taken),
            "mqtt": pick_port("mqtt", a.mqtt_port, a.strict_ports, taken),
        }
        self.web_url = f"http://127.0.0.1:{self.ports['web']}"

    def cloud_env(self) -> dict:
        env = dict(os.environ)
        env.update({
            "FLASK_APP": "cloud",
            "PYTHONUNBUFFERED": "1",
            "SECRET_KEY": self.state["secret_key"],
            "DATABASE_URL": "sqlite:///" + str(self.var / "keydrop.sqlite3"),
            "MAIL_SERVER": "127.0.0.1",
            "MAIL_PORT": str(self.ports["smtp"]),
            "MAIL_USE_TLS": "0",
            "MAIL_USE_SSL": "0",
            "MAILER_POLL_INTERVAL": "1",
            "DEV_MAILBOX_DIR": str(self.var / "maildir"),
            "PUBLIC_BASE_URL": self.web_url,
            "MQTT_HOST": "127.0.0.1",
            "MQTT_PORT": str(self.ports["mqtt"]),
            "MQTT_PUBLIC_HOST": "127.0.0.1",
            "MQTT_PUBLIC_PORT": str(self.ports["mqtt"]),
            "MQTT_PUBLIC_TLS": "0",
            # the bridge's login, and the cloud's admin login for the locks' broker logins (dynamic security)
            "MQTT_USERNAME": "bridge",
            "MQTT_PASSWORD": self.state["bridge_password"],
            "MQTT_ADMIN_USERNAME": "keydrop-admin",
            "MQTT_ADMIN_PASSWORD": self.state["mqtt_admin_password"],
            # one web process: the in-memory rate limiter is fine; a demo should not lock itself out
            "RATELIMIT_ENABLED": "0",
            # plain http on this machine: the only place cookies go without the Secure flag
            "SESSION_COOKIE_SECURE": "0",
            # feeds and webhooks of a demo live on this machine (a local .ics server, a local receiver)
            "CALENDAR_ALLOW_PRIVATE_HOSTS": "1",
        })
        env.pop("DEV_MAILBOX_DIR_DISABLED", None)
        return env

    def child_env(self) -> dict:
        return self.cloud_env()

    def flask(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(BIN / "flask"), "--app", "cloud", *args], env=self.cloud_env(), cwd=ROOT,
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise StackError(f"`flask --app cloud {' '.join(args)}` failed:\n{proc.stdout}{proc.stderr}")
        return proc

    def ensure_mosquitto(self) -> str:
        exe = os.environ.get("KEYDROP_MOSQUITTO") or shutil.which("mosquitto") or (
            "/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
        if exe:
            return exe
        if os.geteuid() == 0 and shutil.which("apt-get") and not self.args.no_install:
            say("mosquitto is missing: installing it with apt-get")
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            subprocess.run(["apt-get", "update", "-qq"], env=env, check=False)
            r = subprocess.run(["apt-get", "install", "-y", "-qq", "mosquitto"], env=env)
            exe = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto")
                                                 else None)
            if r.returncode == 0 and exe:
                return exe
            raise StackError("installing mosquitto with apt-get failed (see above)")
        raise StackError("the MQTT broker mosquitto is not installed. Install it, then run `make run` again:\n"
                         "    sudo apt-get install mosquitto      (Debian/Ubuntu; `brew install mosquitto` on macOS)")

    def start_smtp(self) -> None:
        c = self.start("smtp", [sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{self.ports['smtp']}",
                                "-c", "aiosmtpd.handlers.Mailbox", str(self.var / "maildir")])
        wait_tcp(self.ports["smtp"], 20, c)

    def start_broker(self, exe: str) -> None:
        from tools.mosquitto import DYNSEC_PLUGIN, Mosquitto
        if not os.path.exists(DYNSEC_PLUGIN):
            raise StackError(f"mosquitto's dynamic-security plugin is missing ({DYNSEC_PLUGIN}): install mosquitto "
                             f"2.0 or later, or name the plugin with KEYDROP_DYNSEC_PLUGIN=/path/to/it.so")
        # the broker's state (its locks' logins) stays in VAR/mqtt across runs
        broker = Mosquitto(self.var / "mqtt", port=self.ports["mqtt"], bridge_password=self.state["bridge_password"],
                           admin_password=self.state["mqtt_admin_password"])
        c = self.start("mosquitto", [exe, "-c", str(broker.conf)])
        wait_tcp(self.ports["mqtt"], 20, c)

    def init_db(self) -> None:
        self.flask("db", "upgrade")

    def start_web(self) -> None:
        c = self.start("web", [str(BIN / "flask"), "--app", "cloud", "run", "--host", "127.0.0.1",
                               "--port", str(self.ports["web"]), "--no-reload", "--no-debugger"])
        wait_http(self.web_url + "/healthz", 60, c)

    def start_mailer(self) -> None:
        self.start("mailer", [str(BIN / "flask"), "--app", "cloud", "mailer"])

    def start_automation(self) -> None:
        """The reservation-feed worker and the alerts/readiness worker (docs/automation.md)."""
        self.start("calendars", [str(BIN / "flask"), "--app", "cloud", "calendars"])
        self.start("automation", [str(BIN / "flask"), "--app", "cloud", "automation"])

    def start_bridge(self) -> None:
        self.start("bridge", [str(BIN / "flask"), "--app", "cloud", "bridge"])

    def start_lock(self, token: str) -> None:
        lock_dir = self.var / "lock"
        st = self.state
        if st.get("lock_mqtt_port") != self.ports["mqtt"] or not (lock_dir / "flash" / "config.json").exists():
            say("provisioning the simulated lock")
            Demo(self).provision_lock(lock_dir, token)
            st["lock_mqtt_port"] = self.ports["mqtt"]
            self.save_state(st)
        c = self.start("lock", [sys.executable, str(ROOT / "tools" / "simlock"), "run", str(lock_dir),
                                "--keypad-port", str(self.ports["keypad"])])
        wait_http(f"http://127.0.0.1:{self.ports['keypad']}/state.json", 120, c)

    # orchestration
    def run(self) -> int:
        self.prepare()
        exe = self.ensure_mosquitto()
        say(f"state in {self.var}, logs in {self.log_dir}")
        self.start_smtp()
        self.start_broker(exe)
        self.init_db()
        demo = Demo(self)
        demo.agency()
        self.start_web()
        token = demo.token()
        self.start_mailer()
        self.start_automation()
        self.start_bridge()
        self.start_lock(token)
        self.banner()
        return self.watch()

    def banner(self) -> None:
        p = self.ports
        lines = [
            "",
            "KeyDrop is running on this machine:",
            f"  web site        {self.web_url}/",
            f"  demo login      {DEMO_EMAIL}  /  {self.state['demo_password']}",
            f"  mailbox (dev)   {self.web_url}/dev/mailbox/",
            f"  lock keypad     http://127.0.0.1:{p['keypad']}/   (simulated lock {DEMO_MAC})",
            f"  MQTT broker     127.0.0.1:{p['mqtt']}      SMTP sink  127.0.0.1:{p['smtp']}",
            f"  state           {self.var}   (logs in {self.log_dir})",
        ]
        lines += ["Press Ctrl-C to stop.", ""]
        print("\n".join(lines), flush=True)
        (self.var / "urls.json").write_text(json.dumps({
            "web": self.web_url + "/", "mailbox": self.web_url + "/dev/mailbox/",
            "keypad": f"http://127.0.0.1:{p['keypad']}/",
            "login": {"email": DEMO_EMAIL, "password": self.state["demo_password"]},
            "lock": DEMO_MAC, "ports": p, "pid": os.getpid(),
            "children": {c.name: c.proc.pid for c in self.children},  # each is also its process group id
        }, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.devstack", description=__doc__.split("\n\n")[0])
    ap.add_argument("--var", default=os.environ.get("KEYDROP_VAR", str(ROOT / "var")),
                    help="folder holding all state (default ./var or $KEYDROP_VAR)")
    for name, port in DEFAULT_PORTS.items():
        ap.add_argument(f"--{name}-port", type=int, default=int(os.environ.get(f"KEYDROP_{name.upper()}_PORT", port)))
    ap.add_argument("--strict-ports", action="store_true", help="fail if a port is taken instead of moving up")
    ap.add_argument("--no-install", action="store_true", help="never apt-get install mosquitto")
    args = ap.parse_args(argv)

    return run_until_signal(Stack(args), say)


if __name__ == "__main__":
    sys.exit(main())
