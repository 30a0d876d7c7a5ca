"""The boot selector's decision (boot.py runs it, then forgets it): installs a downloaded release, picks the
application slot that boots (bootstate.py), and rolls back a version on trial that never confirmed itself.

Installing runs here, before the application and its link take the heap: the release's Ed25519 signature
(by the release key in config.json) over its manifest, the archive's SHA-256 and size, then every file
unpacked into the spare slot with its own hash checked; only then does the boot state switch, in one atomic
save. A refusal (bad signature, wrong hash...) leaves the running version as it was and is kept for the
cloud. A power cut anywhere leaves the pending release pending: the next boot starts the install again.

A version on trial gets one boot: the selector checks its files against the archive (the self-check) and counts
the boot before handing over; if the self-check fails, or the lock boots again before the new version confirmed
itself (a crash, a watchdog or power reset, no signed answer from the cloud in time), the last good slot boots
and the reason is kept for the cloud."""
import sys


def run(boot_file: str) -> None:
    """Install a pending release, put the slot to boot on sys.path, run its main. A version on trial that
    fails at import (before its own crash handler could run) is marked failed and the last good one boots in
    this same power-up."""
    keep = set(sys.modules)
    base = list(sys.path)
    factory = boot_file.rsplit("/", 1)[0] if "/" in boot_file else ""
    trial = choose(keep, factory)
    try:
        import main  # type: ignore
    except Exception as e:
        if not trial:
            raise
        sys.print_exception(e, sys.stderr)  # type: ignore
        for m in list(sys.modules):
            if m not in keep:
                del sys.modules[m]
        sys.path[:] = base
        choose(keep, factory, "crash_at_boot: " + repr(e)[:80])
        import main  # type: ignore
    main.main()


def choose(keep, factory: str, crashed=None) -> bool:
    """Put the slot to boot on sys.path ahead of the factory application (the directory boot.py came from)
    and return whether it runs on trial. crashed: the version on trial just failed at import, roll it back.
    Modules imported here are forgotten again (keep: what was loaded before), so the slot imports its own."""
    import bootstate

    st = bootstate.load()
    if st.get("pending") and crashed is None:
        _install(bootstate, st)
        bootstate.save(st)
    if crashed is not None:
        bootstate.rollback(st, crashed)
        bootstate.save(st)
    elif st["trial"]:
        if st["tries"]:
            bootstate.rollback(st, "crash_at_boot" if st["stage"] == "booting" else "reset_before_confirmed")
        else:
            bad = _self_check(bootstate, st)
            if bad is not None:
                bootstate.rollback(st, "self_check:" + bad)
            else:
                st["tries"] = 1
                st["stage"] = "booting"
        bootstate.save(st)
    slot = st["slot"]
    if slot:
        d = bootstate.slot_dir(slot)
        i = sys.path.index(factory) if factory in sys.path else 0
        sys.path[i:i] = [d, d + "/lib"]
    for name in list(sys.modules):
        if name not in keep:
            del sys.modules[name]
    return bool(st["trial"])


def _self_check(bootstate, st):
    """The new version's self-check before its one boot on trial: every file of its slot against the archive
    (None, or why not). Here, with the whole heap, rather than beside the application's link."""
    import filehash
    import fwbundle

    work = fwbundle.check_steps(bootstate.ARCHIVE, bootstate.slot_dir(st["slot"]))
    while True:
        r = filehash.step(work)  # its outcome: a check cut short or failing is a reason, never a pass
        if r is not None:
            return None if r[0] else r[1]


def _install(bootstate, st) -> None:
    p = st["pending"]
    try:
        reason = _check(bootstate.ARCHIVE, p)
        if reason is None:
            import fwbundle

            slot = bootstate.spare(st)
            for _ in fwbundle.unpack_steps(bootstate.ARCHIVE, bootstate.slot_dir(slot)):
                pass
            bootstate.stage(st, slot, p["ver"])
            st["refused"] = None
    except MemoryError:
        reason = "no_memory"
    except OSError:
        reason = "flash"
    except Exception as e:  # fwbundle.BundleError
        reason = str(e.args[0]) if e.args else "bad_archive"
    st["pending"] = None
    if reason is not None:
        st["refused"] = {"ver": p["ver"], "reason": reason}
        try:
            import os

            os.remove(bootstate.ARCHIVE)
        except OSError:
            pass


def _check(path: str, p: dict):
    """None when the archive at path is the signed release p describes, else the reason."""
    import json
    from binascii import unhexlify

    import ed25519
    import fwbundle

    try:
        with open("config.json") as f:
            key = unhexlify(json.load(f)["fw_pubkey"])
    except (OSError, ValueError, KeyError, TypeError):
        return "no_key"
    sha = unhexlify(p["sha"])
    if not ed25519.verify(key, fwbundle.manifest(p["ver"], p["target"], p["size"], sha, p["flags"]),
                          unhexlify(p["sig"])):
        return "bad_signature"
    import filehash

    for r in filehash.steps(path):
        pass
    digest, n = r
    if n != p["size"] or digest != sha:
        return "bad_hash"
    return None
