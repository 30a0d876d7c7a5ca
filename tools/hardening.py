"""Whether a board is hardened for production, read from its eFuses: what `provision --production` checks.

The probe (PROBE, run on the board by mpremote before anything is installed) reports raw eFuse words and the
filesystem partition's `encrypted` flag; missing() decodes them here, on the computer, into a list of what is
not done, each with the step that does it (docs/security.md, "Production hardening"). Reading the words
through the running MicroPython keeps espefuse (and the ROM download mode a hardened board no longer has) out
of the installer's way.

Register layout of the classic ESP32 (ESP-IDF components/soc/esp32/register/soc/efuse_reg.h, base 0x3FF5A000):
  EFUSE_BLK0_RDATA0  bit 2 WR_DIS of FLASH_CRYPT_CNT (and of UART_DOWNLOAD_DIS, which shares it),
                     bits 26..20 FLASH_CRYPT_CNT (odd number of bits set: flash encrypted),
                     bit 27 UART_DOWNLOAD_DIS (ROM download mode off; ESP32 v3.0 and newer)
  EFUSE_BLK0_RDATA6  bit 2 CONSOLE_DEBUG_DISABLE, bit 5 ABS_DONE_1 (secure boot v2), bit 6 JTAG_DISABLE,
                     bits 7/8/9 DISABLE_DL_ENCRYPT / DISABLE_DL_DECRYPT / DISABLE_DL_CACHE (release mode)
"""
from __future__ import annotations

from typing import Any

# The firmware image this project builds for production names itself so (MICROPY_HW_BOARD_NAME of
# docs/security.md's board definition): only that image closes the REPL once config.json says production.
PRODUCTION_BOARD = "KeyDrop"

# Runs on the board after tools.provision's PROBE, adding r['efuse']. On the MicroPython unix port (the
# installer tests' board) the words come from the file keydrop_efuse.json, the same host-testing seam as
# keydrop_mac: the unix port has no eFuses, and reading an ESP32 address there would crash it.
PROBE = r"""
e = None
m = getattr(sys.implementation, '_machine', '')
if sys.platform == 'esp32' and m.endswith('with ESP32'):
    import machine, esp32
    e = {'rdata0': machine.mem32[0x3FF5A000], 'rdata6': machine.mem32[0x3FF5A018], 'machine': m}
    try:
        e['vfs_encrypted'] = bool(esp32.Partition.find(esp32.Partition.TYPE_DATA, label='vfs')[0].info()[5])
    except (IndexError, AttributeError, OSError):
        e['vfs_encrypted'] = None
elif sys.platform != 'esp32':
    try:
        with open('keydrop_efuse.json') as f:
            e = json.loads(f.read())
    except (OSError, ValueError):
        e = None
r['efuse'] = e
"""

WR_DIS_FLASH_CRYPT_CNT = 1 << 2
FLASH_CRYPT_CNT_SHIFT, FLASH_CRYPT_CNT_MASK = 20, 0x7F
UART_DOWNLOAD_DIS = 1 << 27
CONSOLE_DEBUG_DISABLE = 1 << 2
ABS_DONE_1 = 1 << 5
JTAG_DISABLE = 1 << 6
DISABLE_DL_ENCRYPT, DISABLE_DL_DECRYPT, DISABLE_DL_CACHE = 1 << 7, 1 << 8, 1 << 9

GUIDE = "docs/security.md, \"Production hardening\""


def flash_crypt_cnt(rdata0: int) -> int:
    return (rdata0 >> FLASH_CRYPT_CNT_SHIFT) & FLASH_CRYPT_CNT_MASK


def missing(efuse: Any) -> list[str]:
    """What keeps this board from being a production lock, one sentence each; [] when it is hardened."""
    if not isinstance(efuse, dict):
        return ["its eFuses cannot be read: --production checks a classic ESP32 (v3.0 or newer) running "
                "MicroPython; this board reports another chip, or no eFuse words"]
    try:
        # machine.mem32 hands a word with bit 31 set back as a negative int: keep the 32 bits
        rdata0, rdata6 = int(efuse["rdata0"]) & 0xFFFFFFFF, int(efuse["rdata6"]) & 0xFFFFFFFF
    except (KeyError, TypeError, ValueError):
        return ["its eFuse words are unreadable (the probe's reply lacks rdata0/rdata6)"]
    out = []
    cnt = flash_crypt_cnt(rdata0)
    if bin(cnt).count("1") % 2 == 0:
        out.append(f"flash encryption is off (FLASH_CRYPT_CNT = 0x{cnt:02x}, an even number of bits): "
                   f"config.json with the lock's secret, broker and Wi-Fi passwords would be readable off "
                   f"the flash chip")
    else:
        if not (rdata6 & DISABLE_DL_ENCRYPT and rdata6 & DISABLE_DL_DECRYPT and rdata6 & DISABLE_DL_CACHE):
            out.append("flash encryption is in development mode (DISABLE_DL_ENCRYPT / DISABLE_DL_DECRYPT / "
                       "DISABLE_DL_CACHE not all burned): the ROM bootloader can still read decrypted flash")
        if not rdata0 & WR_DIS_FLASH_CRYPT_CNT:
            out.append("FLASH_CRYPT_CNT is not write-protected: burning one more bit would turn flash "
                       "encryption off")
    if efuse.get("vfs_encrypted") is not True:
        out.append("the filesystem partition 'vfs' is not marked encrypted in the partition table: "
                   "config.json, codes.bin and the state files stay in clear even with flash encryption on")
    if not rdata6 & ABS_DONE_1:
        out.append("secure boot v2 is off (ABS_DONE_1 not burned): the board runs any firmware image, "
                   "including one that prints the lock's secret")
    if not rdata6 & JTAG_DISABLE:
        out.append("JTAG is enabled (JTAG_DISABLE not burned): a debugger can read RAM, keys included")
    if not rdata0 & UART_DOWNLOAD_DIS:
        out.append("the ROM's UART download mode is enabled (UART_DOWNLOAD_DIS not burned)")
    if not rdata6 & CONSOLE_DEBUG_DISABLE:
        out.append("the ROM's debug console is enabled (CONSOLE_DEBUG_DISABLE not burned)")
    board = str(efuse.get("machine") or "")
    if not board.startswith(PRODUCTION_BOARD):
        out.append(f"its MicroPython is not the KeyDrop production image (it reports {board or 'nothing'!r}; "
                   f"the production image reports '{PRODUCTION_BOARD} …'): any other image leaves the REPL "
                   f"open on the serial port after the install")
    return out
