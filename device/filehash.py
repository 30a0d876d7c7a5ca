"""SHA-256 of a file on the flash, 1 KB at a time, as a generator: yields None after each block, then
(digest, size). The updater steps it between main-loop passes (step()); the boot selector drains it, and steps
the new version's self-check (fwbundle.check_steps) through step() to its end."""
import hashlib

from micropython import const

_STEPS = const(8)  # blocks (1 KB) of a hash per main-loop pass (or per step of the selector's self-check)


def steps(path: str):
    h = hashlib.sha256()
    buf = bytearray(1024)
    n = 0
    with open(path, "rb") as f:
        while True:
            k = f.readinto(buf)
            if not k:
                break
            h.update(memoryview(buf)[:k])
            n += k
            yield None
    yield h.digest(), n


def step(it, n: int = _STEPS):
    """Advance a work generator (filehash.steps, fwbundle.check_steps: None per block, then its result) by up
    to n blocks: None while it runs, (True, result) when done, (False, reason) when it failed. A generator that
    ends without a result or raises failed: a check cut short is never a pass."""
    try:
        for _ in range(n):
            r = next(it)
            if r is not None:
                return True, r
        return None
    except StopIteration:
        reason = "interrupted"
    except MemoryError:
        reason = "no_memory"
    except OSError:
        reason = "flash"
    except Exception as e:  # fwbundle.BundleError: its reason
        reason = str(e.args[0]) if e.args else "bad_archive"
    return False, reason
