"""The boot selector's work, when there is some (bootsel.py loads this module only then): accepts or refuses a
release the application was announced, installs a downloaded one, checks a new version before its one trial
boot, and rolls back a version on trial that never confirmed itself.

Accepting runs in a boot of its own: the application records the announcement (boot state "fetch") and
restarts; here the release's rules (fwrules.py) decide, the fetch job goes to ota.bin or the refusal into the
boot state (told to the cloud at every connection), and the board restarts again, into the fetching boot
(docs/ota.md, "Fetching"). The rules' names are never loaded beside the application.

Installing runs here, before the application and its link take the heap: the release's Ed25519 signature
(by the release key in config.json) over its manifest, the archive's SHA-256 and size, then every file
unpacked into the spare slot with its own hash checked; only then does the boot state switch, in one atomic
save. A refusal (bad signature, wrong hash...) leaves the running version as it was and is kept for the
cloud. A power cut anywhere leaves the pending release pending: the next boot starts the install again.

A version on trial gets one boot: its files are checked against the archive (the self-check), the board
restarts so that the trial starts on a fresh heap (the install's and the check's names are never freed), and
the boot is counted before handing over. The trial boot (trial.py) marks what it saw: "confirmed" (the
cloud's signed answer) makes it the last good version here, then a restart; "no_ack" (no answer in time)
rolls it back. If the self-check fails, or the lock boots again with neither mark (a crash, a watchdog or
power reset), the last good slot boots and the reason is kept for the cloud.

Every decision here but the trial's hand-over ends in a restart: the application boots on a heap this work
never touched. (A refusal or a rollback used to run the application in the same boot: at 128k the install's
freed code left no 12 KB in one piece for the link's receiving buffer, a crash.)"""


def decide(crashed=None) -> dict:
    """The boot state after this boot's decision, saved: install a pending release, roll back a trial that
    crashed at import (crashed: why) or came back unconfirmed, or check a new version and count its boot."""
    import bootstate

    st = bootstate.load()
    if st.get("fetch") and crashed is None:
        _accept(st)
        bootstate.save(st)  # after the job: a cut in between accepts again (the job starts over)
        _restart()
    if st.get("pending") and crashed is None:
        _install(bootstate, st)
        bootstate.save(st)
        if not st["trial"]:
            # refused: the running version boots again, after a restart (below)
            _restart()
    if crashed is not None:
        bootstate.rollback(st, crashed)
        bootstate.save(st)
    elif st["trial"]:
        why = None  # a reason to roll back
        if st["stage"] == "confirmed":
            # the trial boot saw the cloud's signed answer: the new last good version. The next boot is a
            # normal one, on a heap without this module's names
            bootstate.confirm(st)
            bootstate.save(st)
            _remove(bootstate.ARCHIVE)
            _restart()
        elif st["stage"] == "no_ack":
            why = "no_ack"
        elif st["tries"]:
            why = "crash_at_boot" if st["stage"] == "booting" else "reset_before_confirmed"
        elif st["stage"] == "checked":
            st["tries"] = 1
            st["stage"] = "booting"
        else:
            bad = _self_check(bootstate, st)
            if bad is not None:
                why = "self_check:" + bad
            else:
                # checked: the trial gets a boot of its own. The install and the check interned every file
                # name of the archive and the signature code's names, never freed: carried into the trial
                # they took it into a sixth name pool (docs/ota.md "Memory"). A cut before the restart
                # checks again; after it, the trial boots.
                st["stage"] = "checked"
                bootstate.save(st)
                _restart()
                st["tries"] = 1
                st["stage"] = "booting"
        if why is not None:
            # rolled back (saved): the last good version boots after a restart (below)
            bootstate.rollback(st, why)
        bootstate.save(st)
        if why is not None:
            _restart()
    return st


def _restart() -> None:
    """A planned reset of the board, from the selector (no Board exists yet: nothing is driven, the relay is
    released). Never returns on a board; the tests replace it."""
    import board

    board.restart()


def _accept(st) -> None:
    """st["fetch"] (the announcement, the version that was running) -> the fetch job in ota.bin, or the
    refusal in st["refused"]; a malformed announcement is dropped (the cloud announces again)."""
    import fwrules

    f = st["fetch"]
    st["fetch"] = None
    try:
        ver, tgt, size, sha, sig, flags = fwrules.parse_release(f["ann"])
        reason = fwrules.refusal(st, f["run"], _pubkey() is not None, ver, tgt, size, flags)
    except (ValueError, KeyError, TypeError):
        return
    if reason is None:
        import json

        import store
        from binascii import hexlify

        job = {"ver": ver, "target": tgt, "size": size, "sha": hexlify(sha).decode(),
               "sig": hexlify(sig).decode(), "flags": flags, "off": 0, "boots": 0}
        store.save("ota.bin", json.dumps(job).encode())  # updater.JOB
    elif reason != "failed_before":  # that one was told already: its first reason stands
        st["refused"] = {"ver": ver, "reason": reason}


def _pubkey():
    """The release key from config.json (bytes), or None."""
    import json
    from binascii import unhexlify

    try:
        with open("config.json") as f:
            return unhexlify(json.load(f)["fw_pubkey"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


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
        _remove(bootstate.ARCHIVE)


def _remove(path: str) -> None:
    try:
        import os

        os.remove(path)
    except OSError:
        pass


def _check(path: str, p: dict):
    """None when the archive at path is the signed release p describes, else the reason."""
    from binascii import unhexlify

    import ed25519
    import fwbundle

    key = _pubkey()
    if key is None:
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
