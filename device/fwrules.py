"""The lock's rules for a release announcement (docs/ota.md, "Fetching"): what a "fw" body must hold, and
whether this lock takes it (no downgrade unless the release says so, size, target, a release key to check it
with, not a version that failed here before). Applied by the boot selector (bootinstall.py) in a boot of its
own, before the fetching boot: loaded beside the application, these names would take it into its next name
pool (docs/firmware.md, "The qstr pool")."""
import sys

MAX_SIZE = 256 * 1024  # a larger bundle is refused (two slots + the archive fit a 2 MB flash)
DOWNGRADE = 1          # manifest flag: the release may replace a higher version


def target() -> str:
    """What the bundle's .mpy files must be compiled for: 'esp32' (xtensawin) or 'host' (the unix port)."""
    return "esp32" if sys.platform == "esp32" else "host"


def parse_version(v):
    """'1.2.3' -> (1, 2, 3); None unless dot-separated whole numbers (at most 4 parts)."""
    if not isinstance(v, str) or not v or len(v) > 32:
        return None
    out = []
    for p in v.split("."):
        if not p or not p.isdigit():
            return None
        out.append(int(p))
    return tuple(out) if len(out) <= 4 else None


def parse_release(obj):
    """A "fw" body -> (ver, target, size, sha, sig, flags) with sha and sig as bytes; raises ValueError when a
    field is missing or of a wrong type."""
    from binascii import unhexlify

    def field(key, kind):
        v = obj.get(key)
        if not isinstance(v, kind) or isinstance(v, bool):
            raise ValueError(key)
        return v

    sha = unhexlify(field("sha", str))
    sig = unhexlify(field("sig", str))
    if len(sha) != 32 or len(sig) != 64:
        raise ValueError("sha/sig")
    return field("ver", str), field("target", str), field("size", int), sha, sig, field("flags", int)


def refusal(st: dict, running: str, has_key: bool, ver: str, tgt: str, size: int, flags: int):
    """Why this lock (boot state st, running version `running`) refuses the release, or None."""
    new = parse_version(ver)
    if new is None:
        return "bad_version"
    if not has_key:
        return "no_key"
    if tgt != target():
        return "wrong_target"
    if not 0 < size <= MAX_SIZE:
        return "oversize"
    for past in (st.get("last"), st.get("refused")):
        if past and past["ver"] == ver:
            return "failed_before"
    if new <= (parse_version(running) or ()) and not flags & DOWNGRADE:
        return "downgrade"
    return None
