"""The boot selector (boot.py runs it, then forgets it): puts the application slot that boots (bootstate.py) on the
module path and imports its main. This part runs in every boot of an updated lock, so it is kept to reading the boot
state: when there is work (an announcement to accept, a release pending, a version on trial, one that just
crashed at import), the work
is bootinstall.py's, loaded only then (names are heap on the board and never freed: the whole decision loaded
in every boot took an updated lock into its next name pool, docs/firmware.md "The qstr pool").

A version on trial that fails at import (before its own crash handler could run) is marked failed and the board
restarts into the last good one."""
import sys


def run(boot_file: str):
    """Decide (choose), put the slot to boot on sys.path and return its main module, for boot.py to run once
    this module is gone (its code and frame would otherwise stay under the application for the whole boot);
    a trial that fails at import rolls back and the board restarts into the last good version."""
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
        forget(keep)
        sys.path[:] = base
        choose(keep, factory, "crash_at_boot: " + repr(e)[:80])
        # rolled back (saved): the last good version boots after a restart, on a fresh heap. In this boot the
        # failed version's imports and the selector's work left too little for the application's buffers (at
        # 128k its 12 KB receiving buffer failed: a crash, then the restart anyway)
        import board

        board.restart()  # never returns on a board
        raise RuntimeError("restart returned")
    return main


def choose(keep, factory: str, crashed=None) -> bool:
    """Put the slot to boot on sys.path ahead of the factory application (the directory boot.py came from)
    and return whether it runs on trial. crashed: the version on trial just failed at import, roll it back.
    Modules imported here are forgotten again (keep: what was loaded before), so the slot imports its own
    (forget)."""
    import store

    st = store.load_dict("boot.bin") or {}  # bootstate.NAME (bootstate.py itself stays unloaded without work)
    if crashed is not None or st.get("pending") or st.get("trial") or st.get("fetch"):
        import bootinstall

        st = bootinstall.decide(crashed)
    slot = st.get("slot")
    if slot:
        d = "app/" + slot  # bootstate.slot_dir
        i = sys.path.index(factory) if factory in sys.path else 0
        sys.path[i:i] = [d, d + "/lib"]
    forget(keep)
    return bool(st.get("trial"))


def forget(keep) -> None:
    """Drop the modules loaded since `keep` was taken, and empty their globals: a stale pointer to one of their
    functions left on the C stack (the collector scans it conservatively, on the ESP32 too) would otherwise
    keep a whole module alive. Measured: store.py's 1.8 KB stayed held under the application of every
    updated lock's boot, beside the slot's own copy (docs/ota.md, "Memory")."""
    for name in list(sys.modules):
        if name not in keep:
            mod = sys.modules.pop(name)
            if hasattr(mod, "__file__"):  # loaded from a file: its globals are a RAM dict
                mod.__dict__.clear()
