"""The backup key's life on the lock: its first use, the 24 h after which the lock asks the cloud for a new one,
and what of it the state file keeps. Pure logic, no hardware: times are the caller's ticks (ms) and trusted
epochs (s, None when the lock has none)."""
from micropython import const

from time import ticks_diff

_ROTATION_S = const(86400)  # from the first use to the rotation request
_SAVE_S = const(600)        # the elapsed time is saved this often while counting (a power cut loses at most that)


class BackupKey:
    """tag: which backup digest this life belongs to (the first bytes of it, hex): a new key starts a new life."""

    def __init__(self, st: dict, now: int, tag: str) -> None:
        self.first_used = st.get("bk_first")  # trusted epoch of the first use (None: unknown yet, or unused)
        self.used = bool(st.get("bk_used", False))
        self.elapsed = int(st.get("bk_elapsed", 0))  # seconds since the first use, as of `mark`
        self.mark = now
        self.saved = self.elapsed
        self.due = bool(st.get("due", False))  # 24 h have passed: the link asks for a new key
        self.tag = st.get("bk", "")
        if self.tag != tag:
            self.reset(tag)  # the backup digest changed since the state was written

    def reset(self, tag: str) -> None:
        """A new backup key: its life starts unused."""
        self.tag = tag
        self.first_used = None
        self.used = False
        self.elapsed = 0
        self.saved = 0
        self.due = False

    def use(self, now: int, t) -> bool:
        """The key opened the door (t: trusted epoch or None); True on its first use (to be logged and saved)."""
        if self.used:
            return False
        self.used = True
        self.elapsed = 0
        self.saved = 0
        self.mark = now
        self.first_used = t
        return True

    def poll(self, now: int, t) -> bool:
        """Once a second (t: trusted epoch or None): whether the state file should be written; `due` turns
        True when the 24 h have passed."""
        if not self.used or self.due:
            return False
        # seconds since the first use: by the ticks since the last boot, plus what earlier boots counted
        el = self.elapsed + ticks_diff(now, self.mark) // 1000
        save = False
        if t is not None and self.first_used is None:
            self.first_used = t - el  # first used before the lock had trusted time: dated now that it has
            save = True
        if t is not None and self.first_used is not None:
            el = max(el, t - self.first_used)
        if el >= _ROTATION_S:
            self.due = True
            return True
        return save or el - self.saved >= _SAVE_S

    def state(self, now: int) -> dict:
        """Its part of the state file (state.bin), as of now."""
        el = self.elapsed + ticks_diff(now, self.mark) // 1000 if self.used else self.elapsed
        self.saved = el
        return {"bk": self.tag, "bk_first": self.first_used, "bk_used": self.used, "bk_elapsed": el, "due": self.due}
