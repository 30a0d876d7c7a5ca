"""Boot selector: runs the application slot bootsel.py picks, then its main. MicroPython runs boot.py first on
the ESP32; the simulator runs it with `-m boot`. It stays the one the lock was installed with (an update never
replaces it). A lock that was never updated has no boot state: then nothing more is loaded, the factory
application runs with the whole heap."""
import sys


def _select(keep, crashed=None) -> bool:
    import bootsel

    f = globals().get("__file__") or ""
    return bootsel.choose(keep, f.rsplit("/", 1)[0] if "/" in f else "", crashed)


def _updated() -> bool:
    import os

    try:
        os.stat("boot.bin")
        return True
    except OSError:
        try:
            os.stat("boot.bin.tmp")  # a first save cut between its writes and renames (store.py)
            return True
        except OSError:
            return False


def _run() -> None:
    keep = set(sys.modules)
    base = list(sys.path)
    trial = _select(keep) if _updated() else False
    try:
        import main  # type: ignore
    except Exception as e:
        if not trial:
            raise
        sys.print_exception(e, sys.stderr)  # type: ignore
        # the version on trial failed at import, before its own crash handler could run: it is marked
        # failed and the last good one boots in this same power-up
        for m in list(sys.modules):
            if m not in keep:
                del sys.modules[m]
        sys.path[:] = base
        _select(keep, "crash_at_boot: " + repr(e)[:80])
        import main  # type: ignore
    main.main()


_run()
