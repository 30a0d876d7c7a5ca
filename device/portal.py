# Setup portal: a small web page served by the lock (microdot) to set its Wi-Fi network, password and
# cloud address (the MQTT broker it reaches the cloud through), and to show its MAC, firmware version and
# connection state.
#
# Mechanism only. What the page shows and where the settings go are injected:
#   status() -> dict   mac, version, wifi, cloud (connection states as short strings), ssid, cloud_addr,
#                      has_password (bool). Missing keys are shown as "?".
#   save(changes)      persists a validated dict {"ssid", "password" (absent = keep), "host", "port", "tls"};
#                      may raise OSError, shown as an error in the page. config_saver(path) below writes the
#                      lock's config.json (device/config.py's format) atomically.
#   on_saved()         optional: called after a successful save (e.g. schedule a restart).
# The access point itself is the board's business (board.py is the only module importing network):
# start_ap() below, and board.stop_ap() when PortalService closes. When the portal opens, and for how long,
# is config.portal_window()'s policy.
#
# microdot must be importable as compiled .mpy on the device and on the unix port under a heap cap.

try:
    import asyncio
except ImportError:  # pragma: no cover
    import uasyncio as asyncio  # type: ignore

import gc
import os
import sys
from time import ticks_diff

# microdot is imported by the first Portal only: a lock that needs no portal never spends heap on it.

SSID_MAX = 32
PASS_MIN = 8
PASS_MAX = 63
FORM_MAX = 1024  # bytes of form body we accept; the page's fields fit well within it

_SCHEMES = ("mqtt", "mqtts")


def escape(s):
    """HTML-escape any value for text and double-quoted attribute contexts."""
    s = str(s)
    return (s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;").replace("'", "&#39;"))


def _host_ok(host):
    if not host or len(host) > 253:
        return False
    for label in host.split("."):
        if not label or len(label) > 63 or label[0] == "-" or label[-1] == "-":
            return False
        for c in label:
            if not ("a" <= c <= "z" or "A" <= c <= "Z" or "0" <= c <= "9" or c == "-"):
                return False
    return True


def check_cloud(addr, tls=True):
    """Validate a cloud (MQTT broker) address: host, host:port, mqtt://host[:port] or mqtts://host[:port].

    Returns (host, port, tls) or raises ValueError with a message for the page. Without a scheme the
    current TLS setting is kept; the port defaults to 8883 with TLS, 1883 without."""
    addr = addr.strip()
    if not addr:
        raise ValueError("the cloud address is required")
    if len(addr) > 200:
        raise ValueError("the cloud address is too long")
    rest = addr
    i = addr.find("://")
    if i >= 0:
        scheme = addr[:i].lower()
        if scheme not in _SCHEMES:
            raise ValueError("the cloud address scheme must be one of " + ", ".join(_SCHEMES))
        tls = scheme == "mqtts"
        rest = addr[i + 3:]
        if rest.endswith("/"):
            rest = rest[:-1]
    host = rest
    port = 8883 if tls else 1883
    if ":" in rest:
        host, p = rest.rsplit(":", 1)
        if not p.isdigit() or not 0 < int(p) < 65536:
            raise ValueError("the cloud port must be a number from 1 to 65535")
        port = int(p)
    if not _host_ok(host):
        raise ValueError("the cloud host must be a host name or an IPv4 address")
    return host, port, tls


def cloud_text(mqtt):
    """How the page shows the configured broker: mqtts://host:port."""
    if not mqtt or not mqtt.get("host"):
        return ""
    return "%s://%s:%s" % ("mqtts" if mqtt.get("tls") else "mqtt", mqtt["host"], mqtt.get("port", ""))


def validate(form, has_password=False, tls=True):
    """Check the submitted form. Returns (changes, errors): errors is a list of messages; changes is
    the dict to save when there are none. The password is never part of a message."""
    errors = []
    ssid = form.get("ssid") or ""
    password = form.get("password") or ""
    keep = bool(form.get("keep_password")) and has_password
    n = len(ssid.encode())
    if n < 1 or n > SSID_MAX:
        errors.append("the Wi-Fi network name must be 1 to %d bytes" % SSID_MAX)
    if password:
        if not PASS_MIN <= len(password) <= PASS_MAX:
            errors.append("the Wi-Fi password must be %d to %d characters, or empty for an open network"
                          % (PASS_MIN, PASS_MAX))
        elif any(not " " <= c <= "~" for c in password):
            errors.append("the Wi-Fi password may only contain printable ASCII characters")
    changes = {"ssid": ssid}
    try:
        changes["host"], changes["port"], changes["tls"] = check_cloud(form.get("cloud") or "", tls)
    except ValueError as e:
        errors.append(str(e))
    if password or not keep:
        changes["password"] = password
    return changes, errors


def apply(cfg, changes):
    """The raw config dict (config.json) with the portal's changes merged in; MQTT credentials kept."""
    cfg = dict(cfg)
    wifi = dict(cfg.get("wifi") or {})
    wifi["ssid"] = changes["ssid"]
    if "password" in changes:
        wifi["password"] = changes["password"]
    wifi.setdefault("password", "")
    cfg["wifi"] = wifi
    mqtt = dict(cfg.get("mqtt") or {})
    mqtt["host"] = changes["host"]
    mqtt["port"] = changes["port"]
    mqtt["tls"] = changes["tls"]
    cfg["mqtt"] = mqtt
    return cfg


def _read_json(path):
    import json
    try:
        with open(path) as f:
            raw = json.load(f)
        return raw if isinstance(raw, dict) else {}
    except (OSError, ValueError):
        return {}


def config_status(path, extra=None):
    """A status() over the lock's config.json: what the page shows as saved settings (never the password)."""
    def status():
        raw = _read_json(path)
        wifi = raw.get("wifi") or {}
        st = {"mac": raw.get("lock_id") or None, "ssid": wifi.get("ssid") or "",
              "has_password": bool(wifi.get("password")), "cloud_addr": cloud_text(raw.get("mqtt")),
              "tls": bool((raw.get("mqtt") or {}).get("tls", True))}
        if extra:
            st.update(extra())
        return st
    return status


def config_saver(path):
    """A save() that merges the changes into config.json: written whole to a temp file, then renamed over."""
    import json

    def save(changes):
        cfg = apply(_read_json(path), changes)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(cfg, f)
        try:
            os.rename(tmp, path)  # atomic replace on LittleFS and POSIX
        except OSError:
            os.remove(path)  # file systems that refuse to rename over a file
            os.rename(tmp, path)
    return save


_CSS = ("body{font-family:sans-serif;max-width:28em;margin:1em auto;padding:0 1em}"
        "label{display:block;margin-top:.8em}input[type=text],input[type=password]{width:100%}"
        ".err{color:#a00}.ok{color:#070}table{border-collapse:collapse}td{padding:.1em .6em .1em 0}")


class Portal:
    """The setup page as a microdot app: await serve(), or step it from a plain loop (Stepper, PortalService)."""

    def __init__(self, status, save, on_saved=None, title="KeyDrop lock setup"):
        self.status = status
        self.save = save
        self.on_saved = on_saved
        self.title = title
        # A per-boot form token: a page from elsewhere cannot post to the lock on the user's behalf.
        self.token = "".join("%02x" % b for b in os.urandom(12))
        from microdot import Microdot
        self.app = app = Microdot()

        @app.route("/", methods=["GET", "POST"])
        async def index(req):
            if req.method == "GET":
                return self.page()
            return self.submit(req)

        @app.route("/status.json")
        async def status_json(req):
            st = self.status()
            return {k: st.get(k) for k in ("mac", "version", "wifi", "cloud", "ssid", "cloud_addr")}

    def _html(self, body, code=200):
        from microdot import Response
        return Response(body, code, {"Content-Type": "text/html; charset=UTF-8",
                                     "Cache-Control": "no-store",
                                     "X-Frame-Options": "DENY",
                                     "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"})

    def submit(self, req):
        if len(req.body or b"") > FORM_MAX:
            return self.page(errors=["the form is too large"], code=413)
        try:
            form = req.form
        except (ValueError, UnicodeError):
            form = None
        if form is None:
            return self.page(errors=["send the form as application/x-www-form-urlencoded"], code=400)
        if form.get("token") != self.token:
            return self.page(errors=["the form has expired: reload the page and try again"], code=400)
        st = self.status()
        changes, errors = validate(form, bool(st.get("has_password")), bool(st.get("tls", True)))
        if errors:
            return self.page(errors=errors, form=form, code=400)
        try:
            self.save(changes)
        except OSError as e:
            return self.page(errors=["could not save the settings (%s)" % e], form=form, code=500)
        if self.on_saved:
            self.on_saved()
        return self.page(saved=True)

    def page(self, errors=None, form=None, saved=False, code=200):
        gc.collect()  # the page is a few kB: make room first, the lock's heap is tight
        st = self.status()
        g = st.get
        ssid = form.get("ssid", "") if form else (g("ssid") or "")
        cloud = form.get("cloud", "") if form else (g("cloud_addr") or "")
        out = ["<!doctype html><html><head><meta charset=utf-8>"
               "<meta name=viewport content='width=device-width,initial-scale=1'><title>",
               escape(self.title), "</title><style>", _CSS, "</style></head><body><h1>",
               escape(self.title), "</h1><table>"]
        for label, key in (("MAC", "mac"), ("Firmware", "version"), ("Wi-Fi", "wifi"), ("Cloud", "cloud")):
            v = g(key)
            out.append("<tr><td>%s</td><td id=%s>%s</td></tr>" % (label, key, escape("?" if v is None else v)))
        out.append("</table>")
        if saved:
            out.append("<p class=ok id=saved>Settings saved. They apply when the lock restarts.</p>")
        for e in errors or ():
            out.append("<p class=err>%s</p>" % escape(e))
        out.append("<form method=post action='/'><input type=hidden name=token value='%s'>" % self.token)
        out.append("<label>Wi-Fi network <input type=text name=ssid required maxlength=32 value=\"%s\"></label>"
                   % escape(ssid))
        # The password is never sent back to the browser, not even as the field's value.
        out.append("<label>Wi-Fi password <input type=password name=password maxlength=63 "
                   "autocomplete=new-password value=''></label>")
        if g("has_password"):
            out.append("<label><input type=checkbox name=keep_password value=1 checked> "
                       "keep the saved password when the field is empty</label>")
        out.append("<label>Cloud address <input type=text name=cloud required maxlength=200 value=\"%s\">"
                   "</label><p><button type=submit>Save</button></p></form></body></html>" % escape(cloud))
        # sent piece by piece: no single block of the page's size is needed on a fragmented heap
        return self._html(iter(out), code)

    # -- running it -------------------------------------------------------------------------------------
    async def serve(self, host="0.0.0.0", port=80):
        await self.app.start_server(host=host, port=port)

    def shutdown(self):
        try:
            self.app.shutdown()
        except AttributeError:
            pass


async def _nap():
    await asyncio.sleep_ms(0)


class Stepper:
    """Runs asyncio servers a step at a time from a plain (non-asyncio) main loop.

    start() schedules the servers' tasks; poll() lets the asyncio scheduler run whatever is ready
    (accepting connections, reading, answering) and returns without waiting. Call poll() from the
    firmware's loop between keypad scans."""

    def __init__(self):
        self.tasks = []

    def start(self, coro):
        self.tasks.append(asyncio.create_task(coro))

    def poll(self):
        asyncio.run(_nap())


def start_ap(board, essid, password=None):
    """Open the lock's access point through the board (board.py owns the network module).

    Returns the AP's IP address as reported by the board, or None when the board has no AP."""
    ap = getattr(board, "start_ap", None)
    if ap is None:
        return None
    return ap(essid, password)


def ap_name(mac):
    """The access point's name: KeyDrop- and the last 6 hex digits of the MAC."""
    return "KeyDrop-" + (mac or "")[-6:].upper()


def wifi_state(board):
    try:
        w = board.wlan()
    except Exception:  # noqa: BLE001 (a board without a station)
        return "not available"
    if w is None:
        return "not available"
    try:
        return "connected" if w.isconnected() else "not connected"
    except Exception:  # noqa: BLE001
        return "?"


class PortalService:
    """The portal as one of the lock's services: poll(now) runs the web server a step (never blocks), so
    the keypad keeps working while the portal is open. bind(lock) lets the page show the link's state.

    window_ms (0 = no limit): the setup window. Once that long has passed since the portal opened, poll()
    closes it: the server stops listening, the board closes the access point, and the portal stays closed
    until the next boot (docs/firmware.md, "Setup portal")."""

    def __init__(self, portal, host, port, board=None, window_ms=0):
        self.portal = portal
        self.stepper = Stepper()
        self.stepper.start(portal.serve(host, port))
        self.lock = None
        self.board = board
        self.window_ms = window_ms
        self.opened = board.ticks_ms() if window_ms else 0

    def bind(self, lock):
        self.lock = lock

    def cloud_state(self):
        for s in getattr(self.lock, "_services", ()):
            c = getattr(s, "connected", None)
            if c is not None:
                c = c() if callable(c) else c
                return "connected" if c else "offline"
        return "offline"

    def poll(self, now=None):
        if self.portal is None:
            return
        if self.window_ms:
            if now is None:
                now = self.board.ticks_ms()
            if ticks_diff(now, self.opened) >= self.window_ms:
                self.close()
                return
        self.stepper.poll()

    def close(self):
        """Stop serving and close the access point (the end of the setup window); idempotent."""
        if self.portal is None:
            return
        self.portal.shutdown()  # closes the listening socket once the scheduler runs the server's task
        st = self.stepper
        for t in st.tasks:
            t.cancel()  # a server that had not started yet never will
        for _ in range(3):
            st.poll()
        st.tasks = []
        self.portal = None
        stop = getattr(self.board, "stop_ap", None)  # the board closes the access point it opened
        if stop is not None:
            stop()
        gc.collect()


def run(board, cfg, path="config.json", host="0.0.0.0", port=80, window_ms=0):
    """Called by main.py when the portal policy (config.portal_window) opens it: open the access point and
    the setup page.

    A provisioned lock gets a PortalService back (main adds it to the lock's services: codes keep working
    while the portal is open), which closes the portal after window_ms (0: never). An unprovisioned lock has
    nothing else to do: serve the page here for good (the installer provisions it over USB, then resets it)."""
    import version
    # a board may say where its portal listens (the simulator: loopback, a free port)
    host, port = getattr(board, "portal_addr", None) or (host, port)
    try:
        mac = board.mac()
    except Exception:  # noqa: BLE001
        mac = None
    if not mac or mac == "000000000000":  # no radio to ask (simulator before the lock starts)
        mac = cfg.get("lock_id") or None
    ip = start_ap(board, ap_name(mac or cfg.get("lock_id") or ""))
    svc = None

    def live():
        return {"mac": mac or cfg.get("lock_id") or "?", "version": version.VERSION, "wifi": wifi_state(board),
                "cloud": svc.cloud_state() if svc is not None else "offline (setup mode)"}

    p = Portal(config_status(path, live), config_saver(path))
    # the console (stderr: stdout may be a simulator's JSON event stream)
    print("portal: setup page on http://%s:%d/" % (ip or host, port), file=sys.stderr)
    if cfg.get("provisioned"):
        svc = PortalService(p, host, port, board, window_ms)
        return svc
    asyncio.run(p.serve(host, port))
