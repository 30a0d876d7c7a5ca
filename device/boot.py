"""Boot selector: picks the application slot (bootstate.py), rolls back a version on trial that never got
confirmed, then runs that slot's main. MicroPython runs boot.py first on the ESP32; the simulator runs it with
`-m boot`. It stays the one the lock was installed with (an update never replaces it), so it does little.

A version on trial gets one boot: the selector counts it before handing over; if the lock boots again before
the new version confirmed itself (a crash, a watchdog or power reset, a failed self-check, no signed answer
from the cloud in time), the last good slot boots and the reason is kept for the cloud."""
import sys


def _here() -> str:
    f = globals().get("__file__") or ""
    return f.rsplit("/", 1)[0] if "/" in f else ""


def _unload(keep) -> None:
    for name in list(sys.modules):
        if name not in keep:
            del sys.modules[name]


def _select():
    import bootstate

    st = bootstate.load()
    if st["trial"]:
        if st["tries"]:
            bootstate.rollback(st, "crash_at_boot" if st["stage"] == "booting" else "reset_before_confirmed")
        else:
            st["tries"] = 1
            st["stage"] = "booting"
        bootstate.save(st)
    slot = st["slot"]
    trial = st["trial"]
    return (bootstate.slot_dir(slot) if slot else None), trial


def _boot(keep, factory: str) -> None:
    d, trial = _select()
    # the selector's own imports go: the slot brings its own store.py, bootstate.py
    _unload(keep)
    base = list(sys.path)
    if d is not None:
        i = sys.path.index(factory) if factory in sys.path else 0
        sys.path[i:i] = [d, d + "/lib"]
    try:
        import main  # type: ignore

        main.main()
    except Exception as e:
        if not trial:
            raise
        sys.print_exception(e, sys.stderr)  # type: ignore
        # the version on trial failed before its own crash handler could run (e.g. an import error): mark it
        # failed and boot the last good one in this same power-up
        _unload(keep)
        sys.path[:] = base
        import bootstate

        st = bootstate.load()
        bootstate.rollback(st, "crash_at_boot: " + repr(e)[:80])
        bootstate.save(st)
        _unload(keep)
        _boot(keep, factory)


def run() -> None:
    _boot(set(sys.modules), _here())


if __name__ == "__main__":
    run()
