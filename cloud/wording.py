"""Plain words for what the lock reports and for the state of its codes (pages and CSV), instead of the
protocol's names (`opened_backup`, `codeset`, revisions)."""
from __future__ import annotations

EVENTS = {
    "boot": "Restarted",
    "opened": "Opened with a code",
    "open": "Opened with a code",
    "opened_backup": "Opened with the backup key",
    "refused": "Wrong code refused",
    "lockout": "Keypad paused after wrong codes",
    "rotation_due": "Asked for a new backup key",
    "codeset": "Received the latest codes",
    "codeset_refused": "Refused a code update",
    "time_set": "Clock set",
    "time_refused": "Refused a clock setting",
    "backup_first_use": "Backup key used for the first time",
    "backup_installed": "New backup key installed",
    "crash": "Firmware error, restarted",
}
REFUSALS = {
    "unknown": "not a valid code",
    "outside_window": "a code outside its dates",
    "no_time": "the lock did not know the time",
    "length": "wrong number of digits",
}


def event_words(kind: str, detail: dict | None = None) -> str:
    detail = detail or {}
    text = EVENTS.get(kind, kind.replace("_", " ").capitalize())
    if kind == "refused" and detail.get("reason") in REFUSALS:
        text += f" ({REFUSALS[detail['reason']]})"
    elif kind == "lockout" and isinstance(detail.get("seconds"), int):
        text += f" for {detail['seconds']} s"
    return text


def sync_words(lock) -> str:
    """Whether the lock holds the codes the agency set (no revision numbers)."""
    if not lock.is_active:
        return "The lock has not connected yet: it gets its codes when it first does."
    if lock.acked_revision >= lock.desired_revision:
        return "Up to date: the lock has every change."
    if lock.online is False:
        return "Changes are waiting: the lock is offline and gets them when it reconnects."
    return "Sending the latest changes to the lock…"


def code_place(code, now) -> str:
    """Where a code stands on the lock itself."""
    if code.revoked_at is not None:
        if code.removed_at is not None:
            return "removed from the lock"
        if code.lock.is_decommissioned:
            return "lock decommissioned"
        return "revoked; waiting for the lock to confirm"
    if code.valid_until <= now:
        return "ended"
    return "on the lock" if code.on_lock_at is not None else "waiting for the lock"
