"""Boot selector: runs the application slot bootsel.py picks, then its main. MicroPython runs boot.py first on
the ESP32; the simulator runs it with `-m boot`. It stays the one the lock was installed with (an update never
replaces it) and keeps nothing of the selection loaded while the application runs: the heap is its."""
import sys

_keep = set(sys.modules)
_base = list(sys.path)


def _select(crashed=None):
    import bootsel

    f = globals().get("__file__") or ""
    return bootsel.choose(_keep, f.rsplit("/", 1)[0] if "/" in f else "", crashed)


_trial = _select()
try:
    import main  # type: ignore

    main.main()
except Exception as e:
    if not _trial:
        raise
    sys.print_exception(e, sys.stderr)  # type: ignore
    # the version on trial failed before its own crash handler could run (e.g. at import): it is marked
    # failed and the last good one boots in this same power-up
    for _m in list(sys.modules):
        if _m not in _keep:
            del sys.modules[_m]
    sys.path[:] = _base
    _select("crash_at_boot: " + repr(e)[:80])
    import main  # type: ignore

    main.main()
