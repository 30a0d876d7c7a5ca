"""Password rules and equal-work checks. zxcvbn estimates how guessable a password is (dictionary words,
keyboard walks, dates, leaked-password lists): below score 3 it is refused."""
from __future__ import annotations

from werkzeug.security import check_password_hash
from zxcvbn import zxcvbn

MIN_LENGTH = 8
MAX_LENGTH = 200
MIN_SCORE = 3  # zxcvbn: 3 = "safely unguessable: moderate protection from offline slow-hash scenario"


def password_problem(password: str, *personal: str) -> str | None:
    """Why `password` is refused, or None. `personal` (the email, the agency name…) count as easy guesses."""
    password = password or ""
    if len(password) < MIN_LENGTH:
        return f"Use at least {MIN_LENGTH} characters."
    if len(password) > MAX_LENGTH:
        return f"Use at most {MAX_LENGTH} characters."
    hints = [p for p in personal if p]
    for p in list(hints):
        hints.extend(part for part in p.replace("@", " ").replace(".", " ").split() if len(part) > 2)
    result = zxcvbn(password[:100], user_inputs=hints)  # zxcvbn is slow on very long inputs
    if result["score"] >= MIN_SCORE:
        return None
    advice = result["feedback"].get("warning") or "This password is too easy to guess."
    return f"{advice.rstrip('.')}. Choose a longer or less common one (a few unrelated words work well)."


# A scrypt hash (same parameters as User.set_password) that no password a user types is checked against for
# real: unknown accounts are checked against it.
_DUMMY_HASH = "scrypt:32768:8:1$dKvisKgkGsBjmlzG$6b268c8a1200a2b78b23bc74720389d3baeb612def0b4c1696209aef322d552d278d27ba4e9021921a2c460f4f2a25db81c7f32a84b06e1e12945110f3269c24"


def verify(user, password: str) -> bool:
    """Whether `user` (or None) may log in with `password`. An unknown, invited or removed account costs the
    same scrypt check as a real one, so timing does not tell whether an address has an account."""
    stored = user.password_hash if user is not None and user.removed_at is None else None
    ok = check_password_hash(stored or _DUMMY_HASH, password or "")
    return ok and stored is not None
