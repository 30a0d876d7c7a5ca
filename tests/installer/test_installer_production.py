"""`tools.provision --production`: a board that is not hardened is refused before anything is installed, with
what is missing; a hardened one is installed and marked production. The board is the MicroPython unix port
behind a PTY; its eFuse words come from keydrop_efuse.json (the probe's host-testing seam, tools/hardening.py).

The words are what espefuse 5.6.0 shows (`espefuse --chip esp32 --virt dump`, BLOCK0 words 0 and 6) for a
virtual ESP32 v3.0 taken through docs/security.md's steps: all of them, none, and stopped after enabling
flash encryption.
"""
from __future__ import annotations

import json

from installer_support import run_tool, tool_args
from tools import hardening

NEW_LOCK = ["--name", "Flat 9", "--address", "9 Quai des Tests, Nantes", "--no-wait"]
HARDENED = {"rdata0": 0x08110184, "rdata6": 0x000003E4, "vfs_encrypted": True,
            "machine": "KeyDrop lock with ESP32"}
FACTORY = {"rdata0": 0, "rdata6": 0, "vfs_encrypted": False, "machine": "Generic ESP32 module with ESP32"}
DEV_MODE_FE = dict(HARDENED, rdata0=0x00110180, rdata6=0)  # key + FLASH_CRYPT_CNT=1, nothing after


def efuses(board, words: dict) -> None:
    (board.flash / "keydrop_efuse.json").write_text(json.dumps(words))


def test_unhardened_board_is_refused_and_told_what_is_missing(make_board, cloud):
    board = make_board(mac="24a16054ab91")
    efuses(board, FACTORY)
    proc = run_tool(*tool_args(board, cloud, *NEW_LOCK, "--production"))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 10, out
    assert "not hardened for production; nothing was installed" in proc.stderr and "Traceback" not in out
    for gap in ("flash encryption is off", "'vfs' is not marked encrypted", "secure boot v2 is off",
                "JTAG is enabled", "UART download mode is enabled", "debug console is enabled",
                "not the KeyDrop production image", "docs/security.md"):
        assert gap in proc.stderr, proc.stderr
    # Refused before the cloud or the flash was touched.
    assert cloud.api("GET", "/locks/24a16054ab91")[0] == 404
    assert not (board.flash / "config.json").exists() and not (board.flash / "main.py").exists()


def test_half_hardened_board_names_only_what_is_left(make_board, cloud):
    board = make_board(mac="24a16054ab92")
    efuses(board, DEV_MODE_FE)
    proc = run_tool(*tool_args(board, cloud, *NEW_LOCK, "--production"))
    assert proc.returncode == 10, proc.stdout + proc.stderr
    assert "development mode" in proc.stderr and "not write-protected" in proc.stderr
    assert "secure boot v2 is off" in proc.stderr
    assert "flash encryption is off" not in proc.stderr and "'vfs'" not in proc.stderr
    assert "KeyDrop production image" not in proc.stderr


def test_board_without_efuse_words_is_refused(make_board, cloud):
    board = make_board(mac="24a16054ab93")  # no keydrop_efuse.json: like a chip that is not a classic ESP32
    proc = run_tool(*tool_args(board, cloud, *NEW_LOCK, "--production"))
    assert proc.returncode == 10 and "eFuses cannot be read" in proc.stderr, proc.stdout + proc.stderr


def test_hardened_board_is_installed_as_production(make_board, cloud):
    board = make_board(mac="24a16054ab94")
    efuses(board, HARDENED)
    proc = run_tool(*tool_args(board, cloud, *NEW_LOCK, "--production"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "hardened (eFuses checked)" in proc.stdout
    cfg = json.loads((board.flash / "config.json").read_text())
    assert cfg["production"] is True and cfg["lock_id"] == "24a16054ab94"


def test_without_production_nothing_is_checked_or_marked(make_board, cloud):
    board = make_board(mac="24a16054ab95")
    efuses(board, FACTORY)
    proc = run_tool(*tool_args(board, cloud, *NEW_LOCK))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "production" not in json.loads((board.flash / "config.json").read_text())


def test_each_efuse_bit_is_needed():
    """Clearing any one bit of a hardened board's words makes the check name exactly that gap."""
    assert hardening.missing(HARDENED) == []
    for word, bit, text in [("rdata0", 20, "flash encryption is off"), ("rdata0", 2, "not write-protected"),
                            ("rdata0", 27, "UART download mode"), ("rdata6", 5, "secure boot v2"),
                            ("rdata6", 6, "JTAG"), ("rdata6", 2, "debug console"),
                            ("rdata6", 7, "development mode"), ("rdata6", 8, "development mode"),
                            ("rdata6", 9, "development mode")]:
        words = dict(HARDENED, **{word: HARDENED[word] & ~(1 << bit)})
        gaps = hardening.missing(words)
        assert len(gaps) == 1 and text in gaps[0], (word, bit, gaps)
    # FLASH_CRYPT_CNT with an even number of bits set (0b11: enabled, then disabled again) reads as off
    assert "flash encryption is off" in hardening.missing(dict(HARDENED, rdata0=0x08310184))[0]
    assert "'vfs'" in hardening.missing(dict(HARDENED, vfs_encrypted=None))[0]
    assert "production image" in hardening.missing(dict(HARDENED, machine="Generic ESP32 module with ESP32"))[0]
    assert hardening.missing(dict(HARDENED, rdata0=HARDENED["rdata0"] - (1 << 32))) == []  # mem32's sign
    assert "cannot be read" in hardening.missing(None)[0]
    assert "unreadable" in hardening.missing({"rdata0": "x"})[0]
