"""The state file (state.bin): what a lock keeps across a power cut besides its code set (codes.bin) and its
access log (log0.bin, log1.bin). One JSON object, saved atomically (store.py) at every change of it:

    key          from                meaning
    boot         Lock                boots so far, this one included
    last_good    Lock (clock.py)     the last trusted UTC epoch: trusted time never goes back past it
    fails        Lock (lockout.py)   refused entries in a row
    lock_s       Lock (lockout.py)   the lockout in force, seconds (0: none)
    lock_t       Lock                the trusted epoch that lockout started (null: not known)
    bk           backup.py           which backup key the next four describe (its digest's first 8 bytes, hex)
    bk_first     backup.py           trusted epoch of its first use (null: unused, or used before trusted time)
    bk_used      backup.py           it has opened the door
    bk_elapsed   backup.py           seconds since that first use, as counted so far
    due          backup.py           24 h have passed: the link asks the cloud for a new backup key

Versions: a key that is missing (a first boot, or a file an older firmware wrote) reads as its default, and a
key this firmware does not know is ignored, so a file moves between versions both ways with no migration step.
A key changes meaning only under a new name. Written by save() at every change; read once at boot by restore.py
(boot-only code, dropped from memory afterwards, so the reader costs the running lock no heap)."""
import json

import store

NAME = "state.bin"


def save(lock) -> None:
    """Write the lock's state as of now (its backup key's part from BackupKey.state)."""
    now = lock.ticks_ms()
    st = lock.backup.state(now)
    st["boot"] = lock.boot_count
    st["last_good"] = lock.clock.last_good
    st["fails"] = lock.lockout.fails
    st["lock_s"] = lock.lockout.duration_s if lock.lockout.remaining_ms(now) else 0
    st["lock_t"] = lock.lock_t
    store.save(NAME, json.dumps(st).encode())
