"""The production profile (`python -m tools.prodstack`) on real engines: gunicorn with 4 workers, PostgreSQL, Redis,
mosquitto over TLS only, the mailer, the bridge. A login limit holds across all workers, and a lock
provisioned through it gets online, receives a code over TLS and opens with it."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from e2e_stack import PY, SimLock, wait_until  # noqa: E402
from tests.conftest import SmtpSink  # noqa: E402
from tools.cloudclient import ApiClient, api_url  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
OWNER, OWNER_PW = "owner@prod.example.com", "prod owner password 1"
WORKERS = 4


def _missing() -> str | None:
    for exe in ("redis-server", "psql"):
        if not shutil.which(exe):
            return exe
    if not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")) and not shutil.which("initdb"):
        return "initdb"
    if not os.path.exists("/usr/sbin/mosquitto") and not shutil.which("mosquitto"):
        return "mosquitto"
    return None


@pytest.fixture(scope="module")
def prod(tmp_path_factory):
    missing = _missing()
    if missing:
        pytest.skip(f"{missing} is not installed (tools/sysdeps test installs it)")
    var = tmp_path_factory.mktemp("prod")
    smtp = SmtpSink().start()
    env = dict(os.environ, MAIL_SERVER="127.0.0.1", MAIL_PORT=str(smtp.port), MAILER_POLL_INTERVAL="0.3", MAILER_BACKOFF_BASE_S="1",
               KEYDROP_BRIDGE_EXPIRE_EVERY="5")
    for k in ("DATABASE_URL", "REDIS_URL", "RATELIMIT_STORAGE_URI", "RATELIMIT_ENABLED"):
        env.pop(k, None)
    log = open(var / "prodstack.out", "wb")
    p = subprocess.Popen([PY, "-m", "tools.prodstack", "--var", str(var), "--web-workers", str(WORKERS),
                          "--fast-unsafe"], cwd=ROOT, env=env, stdout=log,
                         stderr=subprocess.STDOUT, start_new_session=True)
    try:
        info = wait_until(lambda: _info(var, p), 180, "the production stack to start", every=0.3)
        info["env"] = env
        info["smtp"] = smtp
        info["var"] = var
        yield info
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        smtp.stop()
        if p.returncode not in (0, None):
            print((var / "prodstack.out").read_text(errors="replace")[-4000:])


def _info(var: Path, p: subprocess.Popen):
    if p.poll() is not None:
        raise AssertionError("prodstack exited:\n" + (var / "prodstack.out").read_text(errors="replace")[-4000:])
    try:
        return json.loads((var / "prod.json").read_text())
    except (OSError, ValueError):
        return None


def _cloud_env(prod) -> dict:
    """The environment the stack's own processes run with (read from its bridge's /proc environ)."""
    pid = prod["children"]["bridge-1"]
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(x.decode().split("=", 1) for x in raw if b"=" in x)


def test_a_login_limit_holds_across_all_web_workers(prod):
    base = prod["web"].rstrip("/")
    # the session cookie is Secure (production serves HTTPS behind its proxy): carry it by hand over loopback HTTP
    with urllib.request.urlopen(base + "/login", timeout=10) as r:
        cookie = r.headers["Set-Cookie"].split(";")[0]
        page = r.read().decode()
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
    outcomes = []
    for i in range(80):
        body = urllib.parse.urlencode({"csrf_token": token, "email": "victim@prod.example.com",
                                       "password": f"guess {i}"}).encode()
        try:
            with urllib.request.urlopen(urllib.request.Request(base + "/login", data=body,
                                                               headers={"Cookie": cookie}), timeout=10) as r:
                outcomes.append(r.status)
        except urllib.error.HTTPError as e:
            outcomes.append(e.code)
    let_through = sum(s == 200 for s in outcomes)
    print(f"80 wrong logins over {WORKERS} gunicorn workers: {let_through} let through, "
          f"{outcomes.count(429)} refused with 429")
    assert set(outcomes) <= {200, 429}
    assert let_through == 10  # LOGIN_RATE_LIMIT's 10 per minute, counted once for all workers
    # and the requests really were spread over the workers
    pids = set(re.findall(r"^<(\d+)> .*POST /login", (prod["var"] / "log" / "web.log").read_text(), re.M))
    assert len(pids) >= 2, pids


def test_a_lock_gets_online_and_opens_with_a_code_over_tls(prod, tmp_path):
    env = _cloud_env(prod)
    r = subprocess.run([str(ROOT / ".venv" / "bin" / "flask"), "--app", "cloud", "agency", "create", "--name",
                        "Prod Rentals", "--email", OWNER, "--password", OWNER_PW], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    base = prod["web"].rstrip("/")
    token = ApiClient(api_url(base), basic=(OWNER, OWNER_PW)).new_token()
    mac = "24a1605400aa"
    d = tmp_path / "lock"
    r = subprocess.run([PY, str(ROOT / "tools" / "simlock"), "init", str(d), "--cloud", base, "--token", token,
                        "--mac", mac, "--name", "Prod flat", "--address", "1 Prod Street", "--timezone", "UTC",
                        "--ca", prod["ca"]], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    cfg = json.loads((d / "flash" / "config.json").read_text())["mqtt"]
    assert cfg["tls"] is True and cfg["port"] == prod["ports"]["mqtts"]
    lock = SimLock(d, env).start()
    try:
        lock.link_event("state", "connected", timeout=90)
        wait_until(lambda: any("is online" in str(m["Subject"]) for m in prod["smtp"].to(OWNER)), 90,
                   "the owner's 'is online' mail through the mailer")
        now = time.time()
        code = ApiClient(api_url(base), token=token).request(
            "POST", f"/locks/{mac}/codes", {"valid_from": _iso(now - 60), "valid_until": _iso(now + 86400)})
        lock.wait(lambda e: e.get("event") == "link" and e.get("codes") == 1, 60, what="the code on the lock")
        assert lock.enter(code["code"])[0] == "open"
    finally:
        lock.stop()


def _iso(epoch: float) -> str:
    from datetime import datetime, timezone
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat()
