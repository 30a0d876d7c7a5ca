"""Tiny test runner for the MicroPython unix port: `micropython -m runner MODULE [NAME]` runs every test_*
function of MODULE (or just NAME), prints one line per test and exits 1 if any failed."""
import gc
import sys


def main() -> None:
    mod = __import__(sys.argv[1])
    only = sys.argv[2] if len(sys.argv) > 2 else None
    names = sorted(n for n in dir(mod) if n.startswith("test_") and (only is None or n == only))
    failed = 0
    for n in names:
        if hasattr(mod, "setup"):
            mod.setup()
        try:
            getattr(mod, n)()
            print("ok", n)
        except Exception as e:
            failed += 1
            print("FAIL", n)
            sys.print_exception(e)
        gc.collect()
    print("%d passed, %d failed" % (len(names) - failed, failed))
    if failed or not names:
        sys.exit(1)


main()
