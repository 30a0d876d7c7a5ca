"""tools/provision.py end to end: the MicroPython unix port behind a PTY plays the board, mpremote talks to
it for real, and the real cloud app answers over HTTP."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import pytest

from installer_support import ROOT, run_tool, tool_args

NEW_LOCK = ["--name", "Flat 3", "--address", "3 Harbour Road, Brest", "--timezone", "Europe/Paris"]


def assert_clean_error(proc: subprocess.CompletedProcess, code: int, text: str) -> None:
    out = proc.stdout + proc.stderr
    assert proc.returncode == code, out
    assert text in proc.stderr, out
    assert "Traceback" not in out, out


def board_config(board) -> dict:
    return json.loads(board.mpremote("fs", "cat", ":config.json").stdout)


def test_install_then_rerun(board, cloud, tmp_path):
    """Fresh board → registered, firmware and config on flash, the firmware's own config module accepts it,
    the tool waits until the cloud reports the lock active. Then a re-run changes nothing but what it must."""
    # A snapshot of device/: the working tree is shared, the firmware may change between the two runs.
    firmware = tmp_path / "device"
    shutil.copytree(ROOT / "device", firmware, ignore=shutil.ignore_patterns("__pycache__"))
    ca = tmp_path / "broker-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nTUlJQnRlc3Q=\n-----END CERTIFICATE-----\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools.provision",
         *tool_args(board, cloud, *NEW_LOCK, "--wifi-ssid", "Harbour", "--wifi-password", "s3cret",
                    "--wait", "60", "--poll", "0.3", "--device-dir", str(firmware), "--ca", str(ca))],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stdout:  # progress is printed per step, as it happens
        seen.append(line)
        if line.startswith("[7/7]"):
            time.sleep(1)  # the tool is polling: "not active" a few times first
            cloud.mark_active(board.mac)  # what the bridge does on the lock's first verified hello
            break
    out, err = proc.communicate(timeout=60)
    out = "".join(seen) + out
    assert proc.returncode == 0, out + err
    for n in range(1, 8):
        assert f"[{n}/7]" in out
    assert "24:a1:60:54:ab:3c" in out and "registered as 24a16054ab3c" in out
    assert "is online" in out

    # The cloud has the lock, in the right agency, active.
    status, lock = cloud.api("GET", "/locks/24a16054ab3c")
    assert status == 200 and lock["status"] == "active" and lock["name"] == "Flat 3"

    # The board's flash: firmware compiled, main.py as source, microdot, config.json.
    listing = board.mpremote("fs", "ls").stdout
    for name in ("main.py", "config.json", "codes.mpy", "store.mpy", "config.mpy", "lib/"):
        assert name in listing, listing
    assert "codes.py" not in listing
    assert "microdot.mpy" in board.mpremote("fs", "ls", ":lib/microdot").stdout
    cfg = board_config(board)
    status, creds = cloud.api("POST", "/locks/24a16054ab3c/provision", {})
    assert cfg["lock_id"] == "24a16054ab3c"
    assert cfg["secret"] == creds["secret"] and len(cfg["secret"]) == 64
    assert cfg["backup_digest"] == creds["backup_digest"]
    assert cfg["mqtt"] == {"host": "mqtt.test.invalid", "port": 8883, "tls": True, "username": "24a16054ab3c",
                           "password": creds["mqtt"]["password"], "ca": "ca.crt"}
    assert (board.flash / "ca.crt").read_bytes() == ca.read_bytes()
    assert cfg["wifi"] == {"ssid": "Harbour", "password": "s3cret"}
    assert cfg["cloud_url"] == cloud.url

    # The firmware's own modules load as .mpy on the board and accept the config (device/config.py).
    check = board.mpremote("exec", "import sys; sys.path.append('lib')\n"
                           "import config, codes, lockout, store\nfrom microdot import Microdot\n"
                           "c = config.load()\nprint('OK', c['provisioned'], c['lock_id'], c['pins']['relay'])")
    assert "OK True 24a16054ab3c 23" in check.stdout, check.stdout + check.stderr

    # A setting made on the board (e.g. by the setup portal) and a source file that would shadow a module.
    cfg["relay_ms"] = 3000
    (board.flash / "config.json").write_text(json.dumps(cfg))
    (board.flash / "codes.py").write_text("raise ImportError('stale source')\n")

    # Re-run, without naming the lock again: takes the registration, copies nothing unchanged, keeps Wi-Fi.
    again = run_tool(*tool_args(board, cloud, "--wait", "5", "--poll", "0.3", "--device-dir", str(firmware)))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "already registered in your agency" in again.stdout
    assert "0 files copied" in again.stdout and "stale removed" in again.stdout
    assert "is online" in again.stdout
    cfg2 = board_config(board)
    assert cfg2["relay_ms"] == 3000 and cfg2["wifi"]["ssid"] == "Harbour" and cfg2["mqtt"]["ca"] == "ca.crt"
    assert "no CA certificate" not in again.stdout
    assert cfg2["secret"] == creds["secret"]
    assert not (board.flash / "codes.py").exists()
    status, locks = cloud.api("GET", "/locks")
    assert [lk["id"] for lk in locks["locks"]].count("24a16054ab3c") == 1


def test_wait_times_out_clearly(make_board, cloud):
    board = make_board(mac="24a16054ab40")
    proc = run_tool(*tool_args(board, cloud, *NEW_LOCK, "--wait", "1.5", "--poll", "0.3"))
    assert_clean_error(proc, 9, "did not come online within 2 s")
    assert "[5/7] config" in proc.stdout  # installed all the same
    assert "no CA certificate to verify it" in proc.stdout  # the test cloud announces TLS; no --ca given
    assert board_config(board)["lock_id"] == "24a16054ab40"


def test_new_lock_needs_an_address(make_board, cloud):
    board = make_board(mac="24a16054ab41")
    proc = run_tool(*tool_args(board, cloud, "--no-wait"))
    assert_clean_error(proc, 2, "give the property's address with --address")
    assert not (board.flash / "config.json").exists()


def test_wrong_token(board, cloud):
    proc = run_tool(*tool_args(board, cloud, *NEW_LOCK, "--no-wait", token="not-a-token"))
    assert_clean_error(proc, 5, "The cloud refused the token (HTTP 401)")
    # and says where a working one comes from
    assert "Account page (/account, API tokens; owner or manager)" in proc.stderr and "--token" in proc.stderr
    assert not (board.flash / "config.json").exists()


def test_mac_of_another_agency(make_board, cloud):
    status, _ = cloud.api("POST", "/locks", {"mac": "24:a1:60:54:ab:42", "name": "Theirs", "address": "Elsewhere",
                                             "timezone": "UTC"}, token=cloud.other_token)
    assert status == 201
    board = make_board(mac="24a16054ab42")
    proc = run_tool(*tool_args(board, cloud, *NEW_LOCK, "--no-wait"))
    assert_clean_error(proc, 6, "This MAC address is registered to another agency")
    assert not (board.flash / "config.json").exists()


def test_cloud_unreachable(board, cloud):
    args = tool_args(board, cloud, *NEW_LOCK, "--no-wait")
    args[args.index("--cloud") + 1] = "http://127.0.0.1:9"
    assert_clean_error(run_tool(*args), 7, "Cannot reach the cloud at http://127.0.0.1:9")


def test_no_board(tmp_path):
    proc = run_tool("--port", str(tmp_path / "ttyNOPE"), "--cloud", "http://127.0.0.1:9", "--token", "t",
                    "--no-wait")
    assert_clean_error(proc, 3, f"No board found at {tmp_path / 'ttyNOPE'}")


@pytest.mark.slow
def test_device_that_is_not_micropython(make_board):
    """A serial device that is something else (here `cat`, echoing): mpremote gets no raw REPL (~10 s)."""
    board = make_board(mac=None, program=["cat"])
    proc = run_tool("--port", board.port, "--cloud", "http://127.0.0.1:9", "--token", "t", "--resume",
                    "--no-wait")
    assert_clean_error(proc, 4, f"The device at {board.port} does not answer like MicroPython")


def test_board_without_a_mac(make_board, cloud):
    board = make_board(mac=None)
    proc = run_tool(*tool_args(board, cloud, "--no-wait"))
    assert_clean_error(proc, 4, "Could not read the MAC address")


def test_install_clears_a_previous_firmwares_update_state(make_board, cloud):
    """A board whose old firmware was updated over the air holds a boot state naming an application slot, a
    fetch in progress and a downloaded archive. Re-provisioned, it must boot the firmware just installed,
    never the old slot (here a slot whose main.py would announce itself)."""
    from sim import mpbuild
    from sim.driver import SimLock

    board = make_board(mac="24a16054ab43")
    slot = board.flash / "app" / "a"
    (slot / "lib").mkdir(parents=True)
    (slot / "main.py").write_text("print('OLD SLOT BOOTED')\nraise SystemExit(3)\n")
    (board.flash / "app" / "b").mkdir()  # an empty spare slot
    (board.flash / "fw.bin").write_bytes(b"old archive")
    # the boot state as the old firmware's own store.py wrote it: slot a, on trial, plus a fetch job
    save = ("import bootstate, store\nst = bootstate.load()\nst.update(slot='a', ver='0.0.9', trial=True)\n"
            "bootstate.save(st)\nbootstate.save(st)\nstore.save('ota.bin', b'{}')\n")
    r = subprocess.run(mpbuild.command() + ["-c", save], cwd=board.flash, env=mpbuild.env(), capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert {"boot.bin", "boot.bin.bak", "ota.bin"} <= {p.name for p in board.flash.iterdir()}

    proc = run_tool(*tool_args(board, cloud, *NEW_LOCK, "--no-wait"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "update state cleared" in proc.stdout
    left = sorted(p.name for p in board.flash.iterdir())
    for name in ("boot.bin", "boot.bin.bak", "boot.bin.tmp", "ota.bin", "fw.bin", "app"):
        assert name not in left, left
    assert "main.py" in left and "config.json" in left

    # Powered up, the lock runs the firmware installed now (the factory application), not slot a.
    board.close()
    (board.flash.parent / "world.json").write_text(json.dumps({"epoch_ms": int(time.time() * 1000)}))
    with SimLock(board.flash.parent) as s:
        ready = [e for e in s.boot if e["event"] == "ready"]
        assert ready and ready[0]["version"] != "0.0.9", s.boot
